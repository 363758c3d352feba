"""Pure helpers behind the virtual-stain overlay (no Qt): the source slide of a layer, the
overlay's RGBA pyramid buffers and where the overlay sits over its source.

The buffers are in-memory chunked arrays (:class:`~.chunked.ChunkedImage`), one per pyramid
level, transparent (alpha 0) where nothing is computed yet, so the slide below shows through and nothing is ever silently wrong.
Tiles are written by worker threads (:meth:`OverlayBuffers.write_block`, under a lock); the
GUI thread only refreshes the layer. Level 0 is written only where someone looked at full
resolution: a zoomed-out view or a whole-slide run fills the coarse levels, which are small.
"""

from __future__ import annotations

import threading

import numpy as np

from napari_virtualstain.core.engine.tiling import Box, map_box

from .chunked import ChunkedImage

# Levels up to this many pixels are painted with the glass colour in one pass when opened,
# and are filled by whole-slide runs; larger ones only where a view needs them.
SMALL_LEVEL_PX = 64 << 20


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
        from .layers import layer_mpp

        slide = Slide(path=path, name=layer.name, levels=levels, mpp=layer_mpp(layer))
    return slide if mpp is None else slide.with_mpp(mpp)


def overlay_geometry(vs, source_layer) -> tuple[np.ndarray, np.ndarray]:
    """(scale, translate) that put the overlay's level 0 exactly over the source layer."""
    ratio = vs.downsamples[0]  # the source layer shows the slide's level 0
    src_scale = np.asarray(source_layer.scale[:2], float)
    scale = src_scale * ratio
    translate = np.asarray(source_layer.translate[:2], float) + (ratio - 1) / 2 * src_scale
    return scale, translate


def shrink(block: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Area-average ``block`` down to ``shape_hw`` (fast: two ``reduceat``, no filtering)."""
    h, w = block.shape[:2]
    th, tw = min(shape_hw[0], h), min(shape_hw[1], w)
    if (th, tw) == (h, w):
        return block
    ys = (np.arange(th) * h) // th
    xs = (np.arange(tw) * w) // tw
    s = np.add.reduceat(np.add.reduceat(block.astype(np.uint32), ys, axis=0), xs, axis=1)
    cy = np.diff(np.append(ys, h))[:, None, None]
    cx = np.diff(np.append(xs, w))[None, :, None]
    return ((s + (cy * cx) // 2) // (cy * cx)).astype(np.uint8)


class OverlayBuffers:
    """The overlay's RGBA pyramid, one chunked in-memory array per level of the virtual stain.

    ``written[i]`` holds the base tiles already written into level ``i``; writes are
    serialised by a lock (a coarse chunk gathers many base tiles).
    """

    def __init__(self, vs) -> None:
        self.vs = vs
        # Chunks exist once written; the rest reads as alpha 0 ("not computed yet").
        side = vs.plan.tile_px
        self.levels = [ChunkedImage((*lv.shape[:2], 4), side) for lv in vs.levels]
        self.written: list[set[tuple[int, int]]] = [set() for _ in self.levels]
        self._lock = threading.Lock()

    def small_levels(self) -> list[int]:
        """Levels small enough to hold a whole slide (the whole-slide run fills them)."""
        out = [i for i, b in enumerate(self.levels) if b.shape[0] * b.shape[1] <= SMALL_LEVEL_PX]
        return out or [len(self.levels) - 1]

    def paint_background(self) -> None:
        """Paint every background tile of the small levels in the glass colour, one pass."""
        vs = self.vs
        if vs.tissue is None or vs.tissue.all():
            return
        rgb = np.asarray(vs.engine.config.background_rgb, np.uint8)
        ds = vs.downsamples
        glass = [t for t in vs.grid.tiles() if vs.block_ready(*t) and not vs.is_tissue(*t)]
        for index in self.small_levels():
            buf, f = self.levels[index], ds[index] / ds[0]
            h, w = buf.shape[:2]
            # Tile-grid image -> this level: each pixel takes the tile its centre falls in.
            rows = np.minimum(
                ((np.arange(h) + 0.5) * f // vs.grid.tile_px).astype(int), vs.grid.n_rows - 1
            )
            cols = np.minimum(
                ((np.arange(w) + 0.5) * f // vs.grid.tile_px).astype(int), vs.grid.n_cols - 1
            )
            is_glass = np.zeros(vs.tissue.shape, bool)
            for r, c in glass:
                is_glass[r, c] = True
            stripe_px = buf.chunks[0]
            for y0 in range(0, h, stripe_px):
                sel = is_glass[rows[y0 : y0 + stripe_px]][:, cols]
                if not sel.any():
                    continue
                out = np.zeros((*sel.shape, 4), np.uint8)
                out[sel, :3] = rgb
                out[sel, 3] = 255
                with self._lock:
                    buf[y0 : y0 + sel.shape[0]] = out
            with self._lock:
                self.written[index].update(glass)

    def missing(self, tiles, index: int) -> list[tuple[int, int]]:
        """Those of ``tiles`` not yet written into level ``index``."""
        done = self.written[index]
        return [t for t in tiles if t not in done]

    def write_block(self, row: int, col: int, block: np.ndarray, from_index: int = 0) -> None:
        """Write a finished base tile into level ``from_index`` and every coarser level."""
        core = self.vs.grid.core(row, col)
        ds = self.vs.downsamples
        for index in range(from_index, len(self.levels)):
            if (row, col) in self.written[index]:
                continue
            buf = self.levels[index]
            f = ds[index] / ds[0]
            target = map_box(core, 1.0, f).intersect(Box(0, 0, *buf.shape[:2]))
            if target is None:
                continue
            pixels = block if f == 1 else shrink(block, (target.h, target.w))
            rgba = np.empty((target.h, target.w, 4), np.uint8)
            rgba[..., :3] = pixels[: target.h, : target.w]
            rgba[..., 3] = 255
            with self._lock:
                buf[target.slices] = rgba
                self.written[index].add((row, col))
