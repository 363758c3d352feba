"""Tile grids, halos, blending windows and level <-> level coordinates.

A :class:`TileGrid` cuts one pyramid level into core tiles of ``tile_px`` (the last row and
column may be shorter). Each tile is predicted from its core plus ``halo_px`` of context on
every side (clipped at the image border, so a border tile sees exactly the border the whole
image would). What a tile contributes to the output is its core, widened by ``blend_px`` when
neighbouring tiles are blended in their overlap with a raised-cosine window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Box(NamedTuple):
    """An axis-aligned pixel rectangle (y, x, h, w) in one level's coordinates."""

    y: int
    x: int
    h: int
    w: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)

    def relative_to(self, outer: Box) -> tuple[slice, slice]:
        """Slices that cut this box out of an array covering ``outer``."""
        y, x = self.y - outer.y, self.x - outer.x
        return slice(y, y + self.h), slice(x, x + self.w)

    def intersect(self, other: Box) -> Box | None:
        y0, x0 = max(self.y, other.y), max(self.x, other.x)
        y1 = min(self.y + self.h, other.y + other.h)
        x1 = min(self.x + self.w, other.x + other.w)
        if y1 <= y0 or x1 <= x0:
            return None
        return Box(y0, x0, y1 - y0, x1 - x0)


@dataclass(frozen=True)
class TileGrid:
    """A grid of core tiles over an image of ``shape_px`` (height, width).

    Parameters
    ----------
    shape_px : tuple of int
        (height, width) of the level in pixels.
    tile_px : int
        Core tile side in pixels.
    halo_px : int
        Context read around each core tile for prediction.
    blend_px : int
        Overlap half-width blended between neighbours; 0 means centre-crop.
    """

    shape_px: tuple[int, int]
    tile_px: int
    halo_px: int = 0
    blend_px: int = 0

    def __post_init__(self) -> None:
        h, w = self.shape_px
        if h <= 0 or w <= 0:
            raise ValueError(f"shape_px must be positive, got {self.shape_px}")
        if self.tile_px <= 0:
            raise ValueError(f"tile_px must be positive, got {self.tile_px}")
        if self.halo_px < 0:
            raise ValueError(f"halo_px must be >= 0, got {self.halo_px}")
        if not 0 <= self.blend_px <= self.halo_px:
            raise ValueError(
                f"blend_px must be in [0, halo_px={self.halo_px}], got {self.blend_px}"
            )
        if 2 * self.blend_px > self.tile_px:
            raise ValueError(f"blend_px={self.blend_px} must be <= tile_px/2 ({self.tile_px / 2})")

    @property
    def n_rows(self) -> int:
        return math.ceil(self.shape_px[0] / self.tile_px)

    @property
    def n_cols(self) -> int:
        return math.ceil(self.shape_px[1] / self.tile_px)

    @property
    def n_tiles(self) -> int:
        return self.n_rows * self.n_cols

    @property
    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dask-style chunk sizes along y and x (the core tiles)."""
        return _chunks(self.shape_px[0], self.tile_px), _chunks(self.shape_px[1], self.tile_px)

    def tiles(self) -> Iterator[tuple[int, int]]:
        """All (row, col) in row-major order."""
        for row in range(self.n_rows):
            for col in range(self.n_cols):
                yield row, col

    def _expand(self, row: int, col: int, by_px: int) -> Box:
        if not (0 <= row < self.n_rows and 0 <= col < self.n_cols):
            raise IndexError(f"tile ({row}, {col}) outside a {self.n_rows}x{self.n_cols} grid")
        h, w = self.shape_px
        y0 = max(row * self.tile_px - by_px, 0)
        x0 = max(col * self.tile_px - by_px, 0)
        y1 = min((row + 1) * self.tile_px + by_px, h)
        x1 = min((col + 1) * self.tile_px + by_px, w)
        return Box(y0, x0, y1 - y0, x1 - x0)

    def core(self, row: int, col: int) -> Box:
        """The tile's own pixels."""
        return self._expand(row, col, 0)

    def padded(self, row: int, col: int) -> Box:
        """Core plus halo (clipped to the image): what the generator sees."""
        return self._expand(row, col, self.halo_px)

    def contribution(self, row: int, col: int) -> Box:
        """Core plus blend band (clipped): what the tile contributes to the output."""
        return self._expand(row, col, self.blend_px)

    def tiles_in_box(self, box: Box) -> list[tuple[int, int]]:
        """(row, col) of every tile whose core intersects ``box`` (clipped to the grid)."""
        h, w = self.shape_px
        y0, x0 = max(box.y, 0), max(box.x, 0)
        y1, x1 = min(box.y + box.h, h), min(box.x + box.w, w)
        if y1 <= y0 or x1 <= x0:
            return []
        rows = range(y0 // self.tile_px, (y1 - 1) // self.tile_px + 1)
        cols = range(x0 // self.tile_px, (x1 - 1) // self.tile_px + 1)
        return [(r, c) for r in rows for c in cols]

    def neighbours(self, row: int, col: int) -> list[tuple[int, int]]:
        """Tiles whose contribution overlaps this tile's core (itself included)."""
        if self.blend_px == 0:
            return [(row, col)]
        out = []
        for r in range(max(row - 1, 0), min(row + 2, self.n_rows)):
            for c in range(max(col - 1, 0), min(col + 2, self.n_cols)):
                out.append((r, c))
        return out


def _chunks(size: int, tile: int) -> tuple[int, ...]:
    full, rest = divmod(size, tile)
    return (tile,) * full + ((rest,) if rest else ())


def round_up(value: float, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)


def order_centre_out(
    tiles: Iterable[tuple[int, int]], grid: TileGrid, centre_yx: tuple[float, float]
) -> list[tuple[int, int]]:
    """Sort tiles by the distance of their core centre to ``centre_yx`` (level pixels)."""

    def distance(rc: tuple[int, int]) -> float:
        b = grid.core(*rc)
        return math.hypot(b.y + b.h / 2 - centre_yx[0], b.x + b.w / 2 - centre_yx[1])

    return sorted(tiles, key=distance)


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


def map_box(box: Box, from_downsample: float, to_downsample: float) -> Box:
    """Map a box between levels given each level's downsample from level 0 (outward rounding)."""
    f = from_downsample / to_downsample
    y0, x0 = math.floor(box.y * f), math.floor(box.x * f)
    y1, x1 = math.ceil((box.y + box.h) * f), math.ceil((box.x + box.w) * f)
    return Box(y0, x0, max(y1 - y0, 1), max(x1 - x0, 1))


def checker(h: int, w: int, square_px: int = 16) -> np.ndarray:
    """An (h, w, 3) uint8 grey/white checkerboard: the "not yet computed" fill."""
    yy, xx = np.indices((h, w))
    on = ((yy // square_px + xx // square_px) % 2).astype(bool)
    out = np.full((h, w, 3), 204, dtype=np.uint8)
    out[on] = 153
    return out
