"""The live virtual-stain overlay: a buffered image layer over its source, filled where you look.

Nothing heavy runs on the GUI thread. When the camera settles, a ``thread_worker`` computes
the tissue tiles in view (centre outward, then a margin) and writes them into the overlay's
pyramid buffers itself; the GUI thread only counts what the worker reports and refreshes the
layer on a throttled timer. Background tiles are painted in the model's own glass colour.

A view that would need more tissue tiles at the model's resolution than ``budget_tiles`` is
not silently truncated: the overlay says how many it would need and what to do (zoom in, or
run the whole slide in the background, :func:`fill_whole_slide`).
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path

from napari_virtualstain._napari.virtual_layer import (
    OverlayBuffers,
    overlay_geometry,
    slide_from_layer,
)
from napari_virtualstain.core.engine.tiling import Box, map_box, order_centre_out
from napari_virtualstain.core.progress import Progress

from .background import in_background
from .runner import quiet_relay
from .viewer_access import qt_window, unproxied

log = logging.getLogger(__name__)
_REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_NEW: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def on_new_overlay(viewer, callback) -> None:
    """Call ``callback(overlay)`` on the GUI thread whenever an overlay opens on ``viewer``."""
    _NEW.setdefault(unproxied(viewer), []).append(callback)


def overlays_of(viewer) -> list:
    """The overlays opened on ``viewer`` (by the widget, the demo or a script)."""
    return [o for o in _REGISTRY.get(unproxied(viewer), []) if not o.closed]


class VirtualOverlay:
    """Keeps a virtual-stain layer above ``source_layer`` filled where the camera looks.

    Parameters
    ----------
    viewer : napari.Viewer
    vs : VirtualStain
    source_layer : napari.layers.Image
        The H&E (or IHC) layer; the overlay sits exactly over it.
    buffers : OverlayBuffers, optional
        Made (and background-painted) in a worker by :func:`open_overlay`.
    margin_tiles : int
        Tiles computed beyond the view on each side, after the view itself.
    budget_tiles : int
        At most this many tissue tiles are computed for one view; beyond it the overlay says so.
    refresh_ms, debounce_ms : int
        The layer is refreshed at most every ``refresh_ms``; work starts ``debounce_ms`` after
        the camera stops.
    """

    def __init__(
        self, viewer, vs, source_layer, buffers=None, opacity: float = 0.6,
        margin_tiles: int = 1, budget_tiles: int = 48, refresh_ms: int = 250,
        debounce_ms: int = 150, layer=None,
    ) -> None:  # fmt: skip
        from qtpy.QtCore import QTimer

        viewer, source_layer = unproxied(viewer), unproxied(source_layer)
        self.viewer, self.vs, self.source = viewer, vs, source_layer
        self.margin_tiles, self.budget_tiles = margin_tiles, budget_tiles
        self.buffers = buffers if buffers is not None else OverlayBuffers(vs)
        self.worker = None
        self.tiles_done = 0  # tissue tiles written by view workers
        self.status = "idle"
        self.closed = False
        self.following = True
        self.view_centre = None  # base px; read by the whole-slide worker (plain tuple)
        self._dirty = False
        self._pending = False
        self._over_budget = False
        self._running: set[tuple[int, int]] = set()
        self.layer = self._add_layer(opacity, layer)
        parent = qt_window(viewer)
        self._debounce = QTimer(parent)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(debounce_ms)
        self._debounce.timeout.connect(self.schedule)
        self._refresh = QTimer(parent)
        self._refresh.setInterval(refresh_ms)
        self._refresh.timeout.connect(self._refresh_if_dirty)
        self._refresh.start()
        self.listeners: list = []  # callables(overlay) told when status changes
        camera = _camera(viewer)
        camera.events.center.connect(self._camera_moved)
        camera.events.zoom.connect(self._camera_moved)
        viewer.layers.events.removed.connect(self._layer_removed)
        if parent is not None:
            parent.destroyed.connect(self.close)
        _REGISTRY.setdefault(viewer, []).append(self)
        for callback in _NEW.get(viewer, []):
            callback(self)

    def _add_layer(self, opacity: float, layer=None):
        scale, translate = overlay_geometry(self.vs, self.source)
        levels = self.buffers.levels
        data = levels if len(levels) > 1 else levels[0]
        meta = {"virtualstain": self.vs.metadata, "source_layer": self.source.name}
        from .._napari.layers import layer_mpp

        src_mpp = layer_mpp(self.source)  # the overlay carries its own level-0 pixel size
        if src_mpp:
            meta["mpp"] = src_mpp * float(self.vs.downsamples[0])
        units = tuple(self.source.units)  # the overlay lives in its source's physical world
        if layer is not None and layer in self.viewer.layers:  # Start after Stop: same layer
            layer.data, layer.scale, layer.translate = data, scale, translate
            layer.units, layer.metadata, layer.name = units, meta, self.vs.name
            return layer
        return self.viewer.add_image(
            data, rgb=True, multiscale=len(levels) > 1, name=self.vs.name, opacity=opacity,
            scale=scale, translate=translate, units=units, contrast_limits=[0, 255], metadata=meta,
        )  # fmt: skip

    # -- camera -> tiles ---------------------------------------------------------------------
    def _camera_moved(self, event=None) -> None:
        if self.following and not self.closed:
            self._debounce.start()  # restarts: compute once the camera settles

    def data_level(self) -> int:
        return self.layer.data_level if self.layer.multiscale else 0

    def visible_box(self) -> Box:
        """The base-level box in view, from the layer's corner pixels at its data level."""
        import numpy as np

        level = self.data_level()
        corners = np.asarray(self.layer.corner_pixels)[:, :2]
        box = Box.from_corners(
            int(corners[0, 0]), int(corners[0, 1]), int(corners[1, 0]) + 1, int(corners[1, 1]) + 1
        )
        ds = self.vs.downsamples
        return map_box(box, ds[level] / ds[0], 1.0)

    def visible_tiles(self) -> list[tuple[int, int]]:
        """Tiles in view (centre outward), then the margin ring, not yet shown at this zoom."""
        grid = self.vs.grid
        box = self.visible_box()
        self.view_centre = box.centre
        inner = grid.tiles_in_box(box)
        outer = grid.tiles_in_box(box.grown(self.margin_tiles * grid.tile_px))
        inner_set = set(inner)
        ordered = order_centre_out(inner, grid, box.centre) + order_centre_out(
            [t for t in outer if t not in inner_set], grid, box.centre
        )
        return self.buffers.missing(ordered, self.data_level())

    # -- work ----------------------------------------------------------------------------
    def schedule(self) -> None:
        """(Re)start the view worker; stale work is cancelled when the view moved on."""
        from napari.qt.threading import create_worker

        if self.closed:
            return
        tiles = self.visible_tiles()
        if self.worker is not None and self.worker.is_running:
            if set(tiles) <= self._running:
                return  # the running work already covers this view
            self._pending = True
            self.worker.quit()  # finishes its current batch, then the new view starts
            return
        if not tiles:
            self._say("view complete")
            return
        self._pending = False
        self._running = set(tiles)
        self._say(f"looking at {len(tiles)} tiles in view")
        worker = create_worker(
            in_background(fill_view),
            self.vs,
            self.buffers,
            tiles,
            self.data_level(),
            self.budget_tiles,
        )
        worker.yielded.connect(self._on_progress)
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda w=worker: self._on_finished(w))
        self.worker = worker
        worker.start()

    def over_budget_message(self, n_needed: int) -> str:
        spt = self.vs.engine.seconds_per_tile
        eta = f", about {max(1, round(n_needed * spt / 60))} min here" if spt else ""
        return (
            f"this view needs {n_needed} tissue tiles at the model's resolution (budget "
            f"{self.budget_tiles}{eta}): zoom in to stain what you look at, or press "
            "'Whole slide in background' to fill every zoom level"
        )

    def _on_progress(self, value) -> None:
        if self.closed or not isinstance(value, Progress):
            return
        self._dirty = True
        self.tiles_done += value.details.get("computed", 0)
        needed = value.details.get("over_budget")
        if needed is not None:
            message = self.over_budget_message(needed)
            if not self._over_budget:  # once per episode, not at every pan
                from napari.utils.notifications import show_info

                show_info(f"{self.vs.name}: {message}")
            self._over_budget = True
            self._say(message)
        elif "over_budget" not in value.details and value.details.get("first"):
            self._over_budget = False
        if not self._over_budget:
            self._say(f"{value.message}: {value.done}/{value.total} tiles in view")

    def _on_error(self, err) -> None:
        if not self.closed:
            log.warning("virtual stain: %s", err)
            self._say(f"error: {err}")

    def _on_finished(self, worker) -> None:
        if worker is not self.worker:
            return
        self.worker = None
        if self.closed:
            return
        self._dirty = True
        if self._pending and self.following:
            self._pending = False
            self.schedule()
        elif not self._over_budget and self.following:
            self._say("view complete")

    def _refresh_if_dirty(self) -> None:
        if self._dirty and not self.closed:
            self._dirty = False
            self.layer.refresh()

    def _say(self, text: str) -> None:
        self.status = text
        if self.closed:
            return
        if text and self.following:
            self.viewer.status = f"{self.vs.name}: {text}"
        for listener in list(self.listeners):
            listener(self)

    def mark_dirty(self) -> None:
        """Ask for a refresh at the next timer tick (safe from a worker: a plain flag)."""
        self._dirty = True

    # -- lifetime ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop following the camera and cancel the view worker (the layer stays)."""
        self.following = False
        self._debounce.stop()
        if self.worker is not None:
            self.worker.quit()
        self._pending = False
        self._say("stopped")

    def resume(self) -> None:
        """Follow the camera again (Start after Stop on the same slide and settings)."""
        if self.closed:
            return
        self.following = True
        self.schedule()

    def _layer_removed(self, event=None) -> None:
        if self.layer not in self.viewer.layers:
            self.close()

    def close(self, *args) -> None:
        """The layer or the viewer is gone: stop everything, quietly."""
        if self.closed:
            return
        self.closed, self.following = True, False
        for timer in (self._debounce, self._refresh):
            try:
                timer.stop()
            except RuntimeError:  # the Qt object went with the window
                pass
        if self.worker is not None:
            self.worker.quit()
        camera = _camera(self.viewer)
        for emitter in (camera.events.center, camera.events.zoom):
            emitter.disconnect(self._camera_moved)
        self.viewer.layers.events.removed.disconnect(self._layer_removed)


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    return scene.camera if scene is not None else viewer.camera


def fill_view(vs, buffers, tiles, level: int, budget_tiles: int):
    """Worker body: write the view's tiles into ``buffers`` from level ``level`` up.

    Ready tiles (background, or cached by an earlier view or run) are written first; then
    the tissue tiles still missing, batch by batch, unless there are more than
    ``budget_tiles`` of them: then the first report says how many (``details["over_budget"]``)
    and nothing is computed. ``worker.quit()`` closes this generator at its next ``yield``.
    """
    ready = [t for t in tiles if vs.block_ready(*t)]
    is_ready = set(ready)
    todo = [t for t in tiles if t not in is_ready]
    details = {"first": True}
    if len(todo) > budget_tiles:
        details["over_budget"] = len(todo)
        todo = []
    total = len(ready) + len(todo)
    yield Progress(0, total, "tiles in view", details)
    done = 0
    for i, (r, c) in enumerate(ready):
        buffers.write_block(r, c, vs.block(r, c), level)
        done += 1
        if i % 16 == 15 or i == len(ready) - 1:
            yield Progress(done, total, "tiles from cache")
    for batch in vs.compute(todo):
        for r, c, block in batch:
            buffers.write_block(r, c, block, level)
        done += len(batch)
        yield Progress(done, total, "computing tissue tiles", {"computed": len(batch)})


def fill_whole_slide(vs, buffers, centre, on_written=None, batch_tiles: int = 4):
    """Progress generator: every tissue tile, nearest the current view centre first.

    Tiles go to the overlay's small levels (the zoomed-out views) and to the tile cache
    (the disk cache when the overlay has one), so an interrupted run resumes where it
    stopped and a later batch run or view reuses them. Returns the number of tiles inferred.
    """
    from napari_virtualstain.core.engine.tiling import order_centre_out

    index = buffers.small_levels()[0]
    grid = vs.grid
    todo = [t for t in grid.tiles() if vs.is_tissue(*t)]
    todo = buffers.missing(todo, index)
    total, done, cached, inferred0 = len(todo), 0, 0, vs.engine.tiles_inferred
    yield Progress(0, total, "whole slide: starting")
    while todo:
        centre_yx = centre() or (grid.shape_px[0] / 2, grid.shape_px[1] / 2)
        todo = order_centre_out(todo, grid, centre_yx)  # the view may have moved
        batch, todo = todo[:batch_tiles], todo[batch_tiles:]
        cached += sum(vs.block_ready(*t) for t in batch)  # from the cache, not the model
        for part in vs.compute(batch):
            for r, c, block in part:
                buffers.write_block(r, c, block, index)
            done += len(part)
        if on_written is not None:
            on_written()  # the GUI timer refreshes the layer
        yield Progress(
            done, total, f"whole slide: {done}/{total} tissue tiles ({cached} from cache)"
        )
    return vs.engine.tiles_inferred - inferred0


def open_overlay(viewer, source_layer, model, on_ready=None, on_error=None, opacity=0.6,
                 reuse_layer=None, budget_tiles=48, force_source_stain=False, **kwargs):  # fmt: skip
    """Open the virtual stain and its buffers off the GUI thread, then add the overlay.

    ``kwargs`` go to :func:`napari_virtualstain.core.engine.lazy.open_virtual_stain` (config
    fields, ``mpp``, ``cache_dir``). Returns the worker; ``on_ready(overlay)`` runs on the GUI
    thread. ``reuse_layer``: an earlier overlay layer to put the new stain into. A source that
    does not look like the model's input stain (a Ki-67 slide given to an H&E -> Ki-67 model)
    is refused with a ``ValueError`` saying what it looks like, unless ``force_source_stain``:
    then the overlay's provenance keeps the verdict (``source_stain_check``, as ``stain`` does).
    """
    from napari.qt.threading import create_worker

    mpp = kwargs.pop("mpp", None)
    slide = slide_from_layer(source_layer, mpp)

    def done(result) -> None:
        vs, buffers = result
        overlay = VirtualOverlay(viewer, vs, source_layer, buffers, opacity=opacity,
                                 budget_tiles=budget_tiles, layer=reuse_layer)  # fmt: skip
        overlay.schedule()
        if on_ready is not None:
            on_ready(overlay)

    worker = create_worker(
        in_background(_open), slide, model, mpp, kwargs, force_source_stain,
        _ignore_errors=on_error is not None,  # else it re-raises in the Qt event loop
    )  # fmt: skip
    worker.returned.connect(done)
    if on_error is not None:  # the caller shows the error (and reports a bug: report_if_bug)
        quiet_relay(worker)
        worker.errored.connect(on_error)
    worker.start()
    return worker


def _open(slide, model, mpp, kwargs, force_source_stain=False):
    from napari_virtualstain.core.engine.lazy import open_virtual_stain
    from napari_virtualstain.core.engine.source_stain import provenance_of

    verdict = checked_source_stain(slide, model, kwargs.get("device", "auto"), force_source_stain)
    vs = open_virtual_stain(slide, model, mpp=mpp, **kwargs)
    vs.metadata.update(provenance_of(verdict))
    buffers = OverlayBuffers(vs)
    buffers.paint_background()
    return vs, buffers


def checked_source_stain(slide, model, device: str = "auto", force: bool = False):
    """``source_stain.verify_source_stain`` for ``model`` (worker side): the verdict, or None;
    a mismatch is a ``ValueError`` that says how to go on, unless ``force``."""
    from napari_virtualstain.core.engine.lazy import load_model_cached
    from napari_virtualstain.core.engine.source_stain import (
        SourceStainError,
        verify_source_stain,
    )

    card = getattr(model, "card", None)
    if card is None and isinstance(model, str | Path):
        card = load_model_cached(str(model), device).card
    try:
        return verify_source_stain(slide, getattr(card, "direction", None), force)
    except SourceStainError as err:
        raise ValueError(f"{err}. Tick 'stain anyway' to stain it regardless") from None
