"""Segment large regions in overlapping blocks, with every nucleus whole and counted once.

Each block is a *core* tile of the grid grown by ``overlap_px`` on every side. A nucleus is taken
whole from the first block (in grid order) whose core, widened by a small margin, holds its
centroid; later blocks that find the same nucleus again (a centroid closer than its radius to
one already taken) drop it. The margin matters: two blocks segment a border nucleus slightly
differently, and with strict cores its centroid could fall outside both. With an overlap larger
than a nucleus plus the margin, the taking block sees the nucleus entirely, so none is split.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np

from ..geometry import Box, TileGrid
from ..progress import Progress, blocking
from .base import Segmenter

DEFAULT_BLOCK_PX = 4096
DEFAULT_OVERLAP_PX = 128


def default_overlap_px(segmenter: Segmenter, mpp: float) -> int:
    """1.5 x the largest nucleus diameter the segmenter keeps, or 128 px when it cannot say."""
    config = getattr(segmenter, "config", None)
    diameter_um = getattr(config, "max_nucleus_diameter_um", None)
    if diameter_um is None:
        return DEFAULT_OVERLAP_PX
    return int(np.ceil(1.5 * diameter_um / mpp))


def iter_segment_in_blocks(
    segmenter: Segmenter,
    rgb,
    mpp: float,
    block_px: int = DEFAULT_BLOCK_PX,
    overlap_px: int | None = None,
    *,
    on_block: Callable | None = None,
    keep_labels: bool = True,
) -> Generator[Progress, None, np.ndarray | None]:
    """Yield a ``Progress`` per block; return the (H, W) uint32 labels of the whole region.

    ``rgb`` is anything sliceable as (y, x, 3) (numpy, dask, zarr): only one block is read at a
    time. Stop iterating to cancel.

    ``on_block(labels, block_rgb, origin_px)`` is called for each block with the nuclei that
    block owns (the others zeroed), under ids unique over the region, ``origin_px`` being the
    block's (y, x) in the region: callers can measure block by block. With ``keep_labels=False``
    the region's label image is never assembled (None is returned), so regions too large to
    hold a label image for can still be measured.
    """
    if block_px <= 0:
        raise ValueError(f"block_px must be > 0, got {block_px}")
    overlap_px = default_overlap_px(segmenter, mpp) if overlap_px is None else int(overlap_px)
    if overlap_px < 0:
        raise ValueError(f"overlap_px must be >= 0, got {overlap_px}")
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        yield Progress(1, 1, "segmentation done")
        return np.zeros((h, w), np.uint32) if keep_labels else None
    # Blocks are the tiles of the package's one grid: cores of block_px, read with the overlap.
    grid = TileGrid((h, w), block_px, halo_px=overlap_px)
    if grid.n_tiles == 1:
        # One block: no borders to reconcile.
        yield Progress(0, 1, "segmenting")
        block = np.asarray(rgb)
        labels = _relabel((yield from _segment(segmenter, block, mpp)))
        if on_block is not None:
            on_block(labels, block, (0, 0))
        yield Progress(1, 1, "segmentation done")
        return labels if keep_labels else None
    out = np.zeros((h, w), np.uint32) if keep_labels else None
    next_label, taken = 1, []
    margin = max(2, min(overlap_px // 4, 16))
    n = grid.n_tiles
    for i, (row, col) in enumerate(grid.tiles()):
        yield Progress(i, n, f"segmenting block {i + 1}/{n}")
        read = grid.padded(row, col)
        block = np.asarray(rgb[read.slices])
        labels = yield from _segment(segmenter, block, mpp)
        core = grid.core(row, col).grown(margin)
        owned, n_owned = _owned(labels, core, read.origin, next_label, taken)
        next_label += n_owned
        if n_owned and on_block is not None:
            on_block(owned, block, read.origin)
        if n_owned and out is not None:
            region = out[read.slices]
            # Pixels already claimed by a neighbour's nucleus stay with it.
            free = (owned > 0) & (region == 0)
            region[free] = owned[free]
    yield Progress(n, n, "segmentation done")
    # Ids are 1..N in block order already (no relabelling: on_block callers keep them).
    return out


#: Blocking form of :func:`iter_segment_in_blocks` (``progress=`` gets each report).
segment_in_blocks = blocking(iter_segment_in_blocks)


def _owned(labels, core: Box, origin, next_label, taken: list) -> tuple[np.ndarray, int]:
    """The nuclei of a block to keep, under fresh ids from ``next_label``.

    Kept: centroid inside ``core`` (region coordinates) and not within its own radius of a
    centroid in ``taken`` (nuclei kept from earlier blocks), which it then joins.
    """
    y0, x0, y1, x1 = core.corners
    ey0, ex0 = origin
    ids, cy, cx, area = _centroids(labels)
    gy, gx = cy + ey0, cx + ex0
    owned = (gy >= y0) & (gy < y1) & (gx >= x0) & (gx < x1)
    if owned.any() and taken:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(np.concatenate(taken)).query(np.stack([gy, gx], 1))
        owned &= dist >= np.sqrt(area / np.pi)
    n = int(owned.sum())
    taken.append(np.stack([gy[owned], gx[owned]], 1))
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.uint32)
    lut[ids[owned]] = np.arange(next_label, next_label + n, dtype=np.uint32)
    return lut[labels], n


def _segment(segmenter, block: np.ndarray, mpp: float):
    """Labels of one block; a segmenter with ``iter_segment`` reports (and can stop) per tile."""
    if hasattr(segmenter, "iter_segment"):
        labels = yield from segmenter.iter_segment(block, mpp)
        labels = np.asarray(labels)
    else:
        labels = np.asarray(segmenter.segment(block, mpp))
    return _checked(segmenter, block, labels)


def _checked(segmenter, block: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if labels.shape != block.shape[:2]:
        raise ValueError(
            f"segmenter {getattr(segmenter, 'name', segmenter)!r} returned labels of shape "
            f"{labels.shape} for a block of shape {block.shape[:2]}"
        )
    return labels


def _centroids(labels: np.ndarray):
    """Label ids (> 0), centroids (y, x) and areas (px), via bincount (no Python loop)."""
    pix = np.flatnonzero(labels)  # nuclei cover a fraction of the block: skip the rest
    if pix.size == 0:
        return np.zeros(0, np.intp), np.zeros(0), np.zeros(0), np.zeros(0)
    flat = labels.ravel()[pix].astype(np.intp)
    counts = np.bincount(flat)
    ids = np.nonzero(counts)[0]
    ids = ids[ids > 0]
    yy, xx = np.divmod(pix, labels.shape[1])
    sy = np.bincount(flat, weights=yy, minlength=counts.size)
    sx = np.bincount(flat, weights=xx, minlength=counts.size)
    return ids, sy[ids] / counts[ids], sx[ids] / counts[ids], counts[ids].astype(float)


def _relabel(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels)[0].astype(np.uint32)
