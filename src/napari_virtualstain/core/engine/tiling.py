"""Tile grids, halos, blending windows and level <-> level coordinates.

``Box``, ``TileGrid``, ``map_box`` and ``round_up`` live in
:mod:`napari_virtualstain.core.geometry` (the package's one geometry) and are re-exported here. A :class:`TileGrid` cuts one pyramid level
into core tiles of ``tile_px`` (the last row and column may be shorter). Each tile is predicted
from its core plus ``halo_px`` of context on every side (clipped at the image border, so a
border tile sees exactly the border the whole image would). What a tile contributes to the
output is its core, widened by ``blend_px`` when neighbouring tiles are blended in their overlap
with a raised-cosine window.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..geometry import Box, TileGrid, map_box, round_up

__all__ = [
    "Box",
    "TileGrid",
    "blend_weights",
    "checker",
    "map_box",
    "order_centre_out",
    "ramp",
    "round_up",
]


def order_centre_out(
    tiles: Iterable[tuple[int, int]], grid: TileGrid, centre_yx: tuple[float, float]
) -> list[tuple[int, int]]:
    """Sort tiles by the distance of their core centre to ``centre_yx`` (level pixels).

    Vectorised (the viewer orders every tile in view when the camera settles, thousands
    zoomed out, on the GUI thread); ties keep their order, as ``sorted`` would.
    """
    tiles = list(tiles)
    if not tiles:
        return []
    rc = np.asarray(tiles, dtype=np.int64).reshape(-1, 2)
    if (rc < 0).any() or (rc[:, 0] >= grid.n_rows).any() or (rc[:, 1] >= grid.n_cols).any():
        raise IndexError(f"a tile outside the {grid.n_rows}x{grid.n_cols} grid")
    start = rc * grid.tile_px
    stop = np.minimum(start + grid.tile_px, np.asarray(grid.shape_px[:2], dtype=np.int64))
    centre = (start + stop) / 2
    distance = np.hypot(centre[:, 0] - centre_yx[0], centre[:, 1] - centre_yx[1])
    return [tiles[i] for i in np.argsort(distance, kind="stable")]


def ramp(n_px: int) -> np.ndarray:
    """A raised-cosine ramp of ``n_px`` samples rising from near 0 to near 1.

    ``ramp(n) + ramp(n)[::-1] == 1`` exactly, so two tiles overlapping by ``n`` pixels
    with opposite ramps form a partition of unity; no sample is 0, so an edge alone is valid.
    """
    t = (np.arange(n_px, dtype=np.float64) + 0.5) / n_px
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def blend_weights(grid: TileGrid, row: int, col: int) -> np.ndarray:
    """(h, w) float32 weights over the tile's contribution box.

    Ramps span ``2 * blend_px`` at every side that has a neighbour; image borders keep 1.
    """
    box = grid.contribution(row, col)
    wy = _axis_weights(box.y, box.h, grid.shape_px[0], grid.blend_px)
    wx = _axis_weights(box.x, box.w, grid.shape_px[1], grid.blend_px)
    return wy[:, None] * wx[None, :]


def _axis_weights(start: int, length: int, size: int, blend_px: int) -> np.ndarray:
    w = np.ones(length, dtype=np.float32)
    if blend_px == 0:
        return w
    # A side with a neighbour is at least 2 * blend_px long (tile_px >= 2 * blend_px).
    n = min(2 * blend_px, length)
    r = ramp(2 * blend_px)
    if start > 0:
        w[:n] = np.minimum(w[:n], r[:n])
    if start + length < size:
        w[length - n :] = np.minimum(w[length - n :], r[::-1][2 * blend_px - n :])
    return w


def checker(h: int, w: int, square_px: int = 16) -> np.ndarray:
    """An (h, w, 3) uint8 grey/white checkerboard: the "not yet computed" fill."""
    yy, xx = np.indices((h, w))
    on = ((yy // square_px + xx // square_px) % 2).astype(bool)
    out = np.full((h, w, 3), 204, dtype=np.uint8)
    out[on] = 153
    return out


def resize_rgb(rgb: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear, anti-aliased resize of uint8 RGB (returned as is when the size matches)."""
    from skimage.transform import resize

    if rgb.shape[:2] == tuple(shape_hw):
        return rgb
    out = resize(rgb, (*shape_hw, rgb.shape[2]), order=1, preserve_range=True, anti_aliasing=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
