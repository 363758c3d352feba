"""The virtual-stain overlay: a buffered image layer over the source, filled visible tiles first.

The layer never holds a lazy graph (napari would compute it on the GUI thread while slicing).
It shows RGBA zarr buffers in memory, transparent (alpha 0) where nothing is computed yet, so
the H&E below shows through and nothing is ever silently wrong. After the camera settles, a
``thread_worker`` computes the tiles in view (centre outward, then a margin), and each result
is written into every pyramid level of the buffer on the GUI thread, then the layer refreshes.
"""

from __future__ import annotations

import numpy as np

from napari_virtualstain.core.engine.tiling import Box, map_box, order_centre_out


def slide_from_layer(layer, mpp: float | None = None):
    """A core ``Slide`` for a napari image layer (reopened from its file when it has one)."""
    import dask.array as da

    from napari_virtualstain.core.io import Slide, open_slide

    meta = layer.metadata or {}
    path = meta.get("slide_path") or getattr(layer.source, "path", None)
    if path and meta.get("format"):
        slide = open_slide(path)
    else:
        data = list(layer.data) if layer.multiscale else [layer.data]
        levels = [da.asarray(d) for d in data]
        if levels[0].ndim != 3 or levels[0].shape[-1] != 3 or levels[0].dtype != np.uint8:
            raise ValueError(
                f"layer {layer.name!r} is {levels[0].shape} {levels[0].dtype}; "
                "expected an (y, x, 3) uint8 RGB image"
            )
        slide = Slide(path=path, name=layer.name, levels=levels, mpp=meta.get("mpp"))
    return slide if mpp is None else slide.with_mpp(mpp)


def _buffers(vs) -> list:
    import zarr

    out = []
    for level in vs.levels:
        h, w = level.shape[:2]
        side = vs.plan.tile_px
        out.append(
            zarr.create_array(
                zarr.storage.MemoryStore(),
                shape=(h, w, 4),
                chunks=(min(side, h), min(side, w), 4),
                dtype="uint8",
                fill_value=0,  # alpha 0: "not computed yet" is transparent
            )
        )
    return out


class VirtualOverlay:
    """Keeps a virtual-stain layer above ``source_layer`` filled where the camera looks.

    Parameters
    ----------
    viewer : napari.Viewer
    vs : VirtualStain
        The lazy virtual stain of the source slide.
    source_layer : napari.layers.Image
        The H&E (or IHC) layer; the overlay copies its scale and translate.
    margin_tiles : int
        Tiles computed beyond the view on each side, after the view itself.
    max_tiles : int
        At most this many tiles are scheduled per view (zoomed far out, zoom in to stain).
    cancel_queue : int
        When the view moves and more than this many tiles are still queued, the running
        work is cancelled and the new view scheduled.
    """

    def __init__(
        self,
        viewer,
        vs,
        source_layer,
        opacity: float = 0.8,
        margin_tiles: int = 1,
        max_tiles: int = 256,
        cancel_queue: int = 8,
        debounce_ms: int = 120,
    ) -> None:
        from qtpy.QtCore import QTimer

        self.viewer, self.vs, self.source = viewer, vs, source_layer
        self.margin_tiles, self.max_tiles, self.cancel_queue = margin_tiles, max_tiles, cancel_queue
        self.buffers = _buffers(vs)
        self.worker = None
        self.queued = 0
        self.tiles_done = 0
        self.status = "idle"
        self._done: set[tuple[int, int]] = set()
        self._running: set[tuple[int, int]] = set()
        self._pending = False
        self.layer = self._add_layer(opacity)
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(debounce_ms)
        self._timer.timeout.connect(self.schedule)
        viewer.camera.events.center.connect(self._camera_moved)
        viewer.camera.events.zoom.connect(self._camera_moved)

    def _add_layer(self, opacity: float):
        src = self.source
        ratio = self.vs.downsamples[0]  # the source layer shows the slide's level 0
        scale = np.asarray(src.scale[:2], float) * ratio
        translate = np.asarray(src.translate[:2], float) + (ratio - 1) / 2 * np.asarray(
            src.scale[:2], float
        )
        data = self.buffers if len(self.buffers) > 1 else self.buffers[0]
        layer = self.viewer.add_image(
            data,
            rgb=True,
            multiscale=len(self.buffers) > 1,
            name=self.vs.name,
            opacity=opacity,
            scale=scale,
            translate=translate,
            contrast_limits=[0, 255],
            metadata={"virtualstain": self.vs.metadata, "source_layer": src.name},
        )
        return layer

    # -- camera -> tiles ---------------------------------------------------------------------
    def _camera_moved(self, event=None) -> None:
        self._timer.start()  # restarts: compute once the camera settles

    def visible_box(self) -> Box:
        """The base-level box in view, from the layer's corner pixels at its data level."""
        layer = self.layer
        level = layer.data_level if layer.multiscale else 0
        corners = np.asarray(layer.corner_pixels)[:, :2]
        box = Box(
            int(corners[0, 0]),
            int(corners[0, 1]),
            int(corners[1, 0] - corners[0, 0]) + 1,
            int(corners[1, 1] - corners[0, 1]) + 1,
        )
        ds = self.vs.downsamples
        return map_box(box, ds[level] / ds[0], 1.0)

    def visible_tiles(self) -> list[tuple[int, int]]:
        """Tiles in view (centre outward), then the margin ring, not yet computed."""
        grid = self.vs.grid
        box = self.visible_box()
        inner = grid.tiles_in_box(box)
        m = self.margin_tiles * grid.tile_px
        outer = grid.tiles_in_box(Box(box.y - m, box.x - m, box.h + 2 * m, box.w + 2 * m))
        centre = (box.y + box.h / 2, box.x + box.w / 2)
        inner_set = set(inner)
        ordered = order_centre_out(inner, grid, centre) + order_centre_out(
            [t for t in outer if t not in inner_set], grid, centre
        )
        todo = [t for t in ordered if not self._shown(t)]
        return todo[: self.max_tiles]

    def _shown(self, tile: tuple[int, int]) -> bool:
        return tile in self._done

    # -- work ----------------------------------------------------------------------------
    def schedule(self) -> None:
        """(Re)start the worker for the current view; cancels stale work when the queue is long."""
        from napari.qt.threading import create_worker

        tiles = self.visible_tiles()
        if self.worker is not None and self.worker.is_running:
            if set(tiles) <= self._running:
                return  # the running work already covers this view
            if self.queued <= self.cancel_queue or not tiles:
                self._pending = True  # almost done: finish, then take the new view
                return
            self.worker.quit()  # stale work scrolled out of view: drop it
        if not tiles:
            self.status = "view complete"
            return
        self._pending = False
        self._running = set(tiles)
        self.queued = len(tiles)
        self.status = f"computing {len(tiles)} tiles"
        worker = create_worker(
            _compute_tiles,
            self.vs,
            tiles,
            _progress={"total": len(tiles), "desc": f"{self.vs.name}: tiles in view"},
        )
        worker.yielded.connect(self._on_tile)
        worker.finished.connect(lambda w=worker: self._on_finished(w))
        self.worker = worker
        worker.start()

    def _on_tile(self, item) -> None:
        row, col, block = item
        self.queued = max(0, self.queued - 1)
        if (row, col) not in self._done:
            self.write_block(row, col, block)
            self.tiles_done += 1
            self.layer.refresh()

    def _on_finished(self, worker) -> None:
        if worker is not self.worker:
            return
        self.worker = None
        self.status = "idle"
        if self._pending:
            self._pending = False
            self.schedule()

    def write_block(self, row: int, col: int, block: np.ndarray) -> None:
        """Write one finished base tile into every level of the buffer (alpha 255)."""
        core = self.vs.grid.core(row, col)
        ds = self.vs.downsamples
        for index, buf in enumerate(self.buffers):
            f = ds[index] / ds[0]
            target = map_box(core, 1.0, f).intersect(Box(0, 0, *buf.shape[:2]))
            if target is None:
                continue
            pixels = block if f == 1 else _shrink(block, (target.h, target.w))
            rgba = np.empty((target.h, target.w, 4), np.uint8)
            rgba[..., :3] = pixels[: target.h, : target.w]
            rgba[..., 3] = 255
            buf[target.slices] = rgba
        self._done.add((row, col))

    def stop(self) -> None:
        """Cancel running work and stop following the camera (the layer stays)."""
        self._timer.stop()
        self.viewer.camera.events.center.disconnect(self._camera_moved)
        self.viewer.camera.events.zoom.disconnect(self._camera_moved)
        if self.worker is not None:
            self.worker.quit()
        self.status = "stopped"


def _compute_tiles(vs, tiles):
    """Worker body: yields ``(row, col, block)`` per tile.

    ``worker.quit()`` closes this generator at its next yield, i.e. after the current batch.
    """
    for batch in vs.compute(tiles):
        yield from batch


def _shrink(block: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    out = resize(block, (*shape_hw, 3), order=1, preserve_range=True, anti_aliasing=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def open_overlay(viewer, source_layer, model, on_ready=None, on_error=None, opacity=0.8, **kwargs):
    """Open the virtual stain off the GUI thread, then add the overlay and fill the view.

    ``kwargs`` go to :func:`napari_virtualstain.core.engine.lazy.open_virtual_stain` (config fields,
    ``mpp``, ``cache_dir``). Returns the worker; ``on_ready(overlay)`` runs on the GUI thread.
    """
    from napari.qt.threading import create_worker

    from napari_virtualstain.core.engine.lazy import open_virtual_stain

    mpp = kwargs.pop("mpp", None)
    slide = slide_from_layer(source_layer, mpp)

    def done(vs) -> None:
        overlay = VirtualOverlay(viewer, vs, source_layer, opacity=opacity)
        overlay.schedule()
        if on_ready is not None:
            on_ready(overlay)

    worker = create_worker(open_virtual_stain, slide, model, mpp=mpp, **kwargs)
    worker.returned.connect(done)
    if on_error is not None:
        worker.errored.connect(on_error)
    worker.start()
    return worker
