"""Pixel geometry shared by every part of the package: one box, one tile grid, one level picker.

Conventions (everywhere): coordinates are (y, x); level 0 is full resolution; a level's
*downsample* is level-0 pixels per level pixel.

- :class:`Box` is an axis-aligned rectangle of whole pixels, stored as its top-left corner and
  size (``y, x, h, w``); :meth:`Box.from_corners` and :attr:`Box.corners` give the
  (y0, x0, y1, x1) form (``y1`` / ``x1`` exclusive). A ``Box`` is not a tuple on purpose:
  unpacking it, which meant (y, x, h, w) in one place and (y0, x0, y1, x1) in another, fails.
- :class:`TileGrid` cuts an image into core tiles, grown by a halo for context.
- :func:`level_for_mpp` and :func:`level_for_size` choose a pyramid level.

This module imports nothing from the package, so any layer can use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned pixel rectangle: top-left ``(y, x)`` and size ``(h, w)`` in one level.

    Construct it as ``Box(y, x, h, w)``, :meth:`from_corners` or :meth:`from_shape`.
    """

    y: int
    x: int
    h: int
    w: int

    def __post_init__(self) -> None:
        if self.h < 0 or self.w < 0:
            raise ValueError(f"a box has a non-negative size, got h={self.h}, w={self.w}")

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def from_corners(cls, y0: int, x0: int, y1: int, x1: int) -> Box:
        """The box from (y0, x0) included to (y1, x1) excluded."""
        return cls(y0, x0, y1 - y0, x1 - x0)

    @classmethod
    def from_shape(cls, shape_px: Sequence[int]) -> Box:
        """The whole of an image of ``shape_px`` ((h, w, ...)): origin (0, 0)."""
        return cls(0, 0, int(shape_px[0]), int(shape_px[1]))

    # -- views ------------------------------------------------------------------------------
    @property
    def y1(self) -> int:
        """First row below the box."""
        return self.y + self.h

    @property
    def x1(self) -> int:
        """First column right of the box."""
        return self.x + self.w

    @property
    def origin(self) -> tuple[int, int]:
        """(y, x) of the top-left pixel."""
        return self.y, self.x

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) in pixels."""
        return self.h, self.w

    @property
    def corners(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1), the end exclusive."""
        return self.y, self.x, self.y1, self.x1

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, columns) slices cutting the box out of an array of the whole level."""
        return slice(self.y, self.y1), slice(self.x, self.x1)

    @property
    def centre(self) -> tuple[float, float]:
        """(y, x) of the centre, in pixel-edge coordinates."""
        return self.y + self.h / 2, self.x + self.w / 2

    # -- operations -------------------------------------------------------------------------
    def relative_to(self, outer: Box) -> tuple[slice, slice]:
        """Slices that cut this box out of an array covering ``outer``."""
        y, x = self.y - outer.y, self.x - outer.x
        return slice(y, y + self.h), slice(x, x + self.w)

    def intersect(self, other: Box) -> Box | None:
        """The overlap of two boxes, or None when they do not overlap."""
        y0, x0 = max(self.y, other.y), max(self.x, other.x)
        y1, x1 = min(self.y1, other.y1), min(self.x1, other.x1)
        if y1 <= y0 or x1 <= x0:
            return None
        return Box.from_corners(y0, x0, y1, x1)

    def clip(self, shape_px: Sequence[int]) -> Box | None:
        """The part inside an image of ``shape_px`` ((h, w, ...)), or None when none is."""
        return self.intersect(Box.from_shape(shape_px))

    def grown(self, by_px: int, shape_px: Sequence[int] | None = None) -> Box:
        """Grown by ``by_px`` on every side, clipped to ``shape_px`` when given."""
        box = Box(self.y - by_px, self.x - by_px, self.h + 2 * by_px, self.w + 2 * by_px)
        if shape_px is None:
            return box
        clipped = box.clip(shape_px)
        if clipped is None:
            raise ValueError(f"{box} lies outside an image of shape {tuple(shape_px[:2])}")
        return clipped

    def scaled(self, factor: float) -> Box:
        """This box in a grid ``factor`` times finer (outward rounding, at least 1 px a side).

        From level ``a`` to level ``b`` the factor is ``downsample[a] / downsample[b]``.
        """
        y0, x0 = math.floor(self.y * factor), math.floor(self.x * factor)
        y1, x1 = math.ceil(self.y1 * factor), math.ceil(self.x1 * factor)
        return Box(y0, x0, max(y1 - y0, 1), max(x1 - x0, 1))


def round_up(value: float, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)


def map_box(box: Box, from_downsample: float, to_downsample: float) -> Box:
    """Map a box between levels given each level's downsample from level 0 (outward rounding)."""
    return box.scaled(from_downsample / to_downsample)


@dataclass(frozen=True)
class TileGrid:
    """A grid of core tiles over an image of ``shape_px`` (height, width).

    Cores of ``tile_px`` start at multiples of ``tile_px`` (the last row and column may be
    shorter) and partition the image. Each tile is read with ``halo_px`` of context on every
    side, clipped at the image border, and contributes its core widened by ``blend_px``.

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
        core = Box(row * self.tile_px, col * self.tile_px, self.tile_px, self.tile_px)
        return core.grown(by_px, self.shape_px)

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
        inside = box.clip(self.shape_px)
        if inside is None:
            return []
        rows = range(inside.y // self.tile_px, (inside.y1 - 1) // self.tile_px + 1)
        cols = range(inside.x // self.tile_px, (inside.x1 - 1) // self.tile_px + 1)
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


# -- pyramid levels -------------------------------------------------------------------------
def level_for_mpp(level_mpps: Sequence[float | None], mpp: float, tolerance: float = 0.01) -> int:
    """The coarsest level whose pixels are not coarser than ``mpp`` (within ``tolerance``).

    ``level_mpps`` is each level's µm/px, finest first; a level of unknown (None) pixel size
    is never chosen. Level 0 when no level is fine enough: never a level coarser than asked.
    """
    if not mpp > 0 or tolerance < 0:
        raise ValueError(f"need mpp > 0 and tolerance >= 0, got mpp={mpp}, tolerance={tolerance}")
    limit = mpp * (1 + tolerance)
    fine = [i for i, m in enumerate(level_mpps) if m is not None and m <= limit]
    return max(fine, default=0)


def level_for_size(
    level_sides_px: Sequence, *, max_px: float | None = None, min_px: float | None = None
) -> int:
    """The level at which something has a suitable size in pixels, finest first.

    ``level_sides_px`` holds per level either a size in pixels (a region's long side at that
    level) or a shape ((h, w, ...), its long side is used). Give exactly one of:

    - ``max_px``: the finest level whose side fits in ``max_px`` (the coarsest when none does),
      for a view cheap enough to compute;
    - ``min_px``: the coarsest level whose side is at least ``min_px`` (level 0 when none is),
      for the cheapest view that still has enough detail.
    """
    if (max_px is None) == (min_px is None):
        raise ValueError("give exactly one of max_px and min_px")
    sides = [max(s[:2]) if hasattr(s, "__len__") else s for s in level_sides_px]
    if not sides:
        raise ValueError("no levels to choose from")
    if max_px is not None:
        return next((i for i, s in enumerate(sides) if s <= max_px), len(sides) - 1)
    return next((i for i in range(len(sides) - 1, -1, -1) if sides[i] >= min_px), 0)


def level_mpps(mpp: float | None, downsamples: Sequence[float]) -> list[float | None]:
    """Each level's µm/px from level 0's ``mpp`` and the levels' downsamples (None if unknown)."""
    return [None if mpp is None else mpp * d for d in downsamples]
