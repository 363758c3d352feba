"""The ``Slide``: a lazy pyramid of (y, x, 3) uint8 dask arrays plus physical metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import dask.array as da
import numpy as np

from ..geometry import Box, level_for_mpp, level_mpps

# A flat image larger than this (on its long side) gets lazily built coarser levels...
PYRAMID_MIN_SIDE_PX = 4096
# ...until the coarsest level fits in this many pixels per side.
PYRAMID_TOP_SIDE_PX = 1024
BACKGROUND_RGB = 255


@dataclass(frozen=True)
class Slide:
    """An opened slide. Nothing is read until a level is indexed or computed.

    Immutable: a slide whose pixel size is corrected is a new slide, :meth:`with_mpp`.

    Attributes
    ----------
    path : Path
        The file or folder it was opened from.
    name : str
        A display name (file name without slide extensions).
    levels : tuple of dask.array.Array
        (y, x, 3) uint8 RGB, level 0 = full resolution, chunked on the file's tiles.
    mpp : float or None
        Level-0 microns per pixel; ``None`` means unknown (never a silent default).
    magnification : float or None
        Objective magnification where the file states it.
    associated : Mapping
        Associated images (label, macro, thumbnail) as numpy arrays, decoded on first access.
    built_levels : int
        How many of the coarsest levels were built by downsampling (not in the file).
    notes : str
        What was converted on reading (greyscale, RGBA, 16-bit), if anything.
    format : str
        The detected format ("svs", "ndpi", "ome-tiff", "tiff", "ome-zarr", "png", ...).
    """

    path: Path | None
    name: str
    levels: Sequence[da.Array]
    mpp: float | None = None
    magnification: float | None = None
    associated: Mapping[str, np.ndarray] = field(default_factory=dict)
    built_levels: int = 0
    notes: str = ""
    format: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        if not self.levels:
            raise ValueError(f"slide {self.name!r} ({self.path}): no pyramid levels")
        if self.mpp is not None and not self.mpp > 0:
            raise ValueError(f"slide {self.name!r} ({self.path}): mpp must be > 0, got {self.mpp}")

    @classmethod
    def from_file(cls, path: Path, levels: list[da.Array], format: str, **metadata) -> Slide:
        """A slide read from ``path``: named after the file (:func:`display_name`), its pyramid
        completed with lazily built coarser levels where it is too shallow
        (:func:`complete_pyramid`); ``metadata``: the other fields (mpp, notes...)."""
        levels, built = complete_pyramid(levels)
        return cls(path=path, name=display_name(path), levels=levels, built_levels=built,
                   format=format, **metadata)  # fmt: skip

    def with_mpp(self, mpp: float | None) -> Slide:
        """The same slide with level-0 pixel size ``mpp`` (µm/px), e.g. a user's correction."""
        return replace(self, mpp=None if mpp is None else float(mpp))

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 (height, width) in pixels."""
        return tuple(self.levels[0].shape[:2])

    @property
    def downsamples(self) -> list[float]:
        """Level-0 pixels per level pixel, per level (from the shapes, averaged over y and x)."""
        h0, w0 = self.shape
        return [((h0 / lv.shape[0]) + (w0 / lv.shape[1])) / 2.0 for lv in self.levels]

    @property
    def level_mpps(self) -> list[float | None]:
        """Microns per pixel of each level (all None when the slide's mpp is unknown)."""
        return level_mpps(self.mpp, self.downsamples)

    def level_mpp(self, level: int) -> float | None:
        """Microns per pixel at ``level``, or None when the slide's mpp is unknown."""
        return self.level_mpps[level]

    def best_level_for_mpp(self, mpp: float) -> int:
        """The coarsest level whose pixels are not coarser than ``mpp`` (level 0 if unknown).

        See :func:`napari_virtualstain.core.geometry.level_for_mpp`.
        """
        return level_for_mpp(self.level_mpps, mpp)

    def read_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Read an (h, w, 3) uint8 region at ``level``; outside the image is white background."""
        if h <= 0 or w <= 0:
            raise ValueError(f"region size must be positive, got h={h}, w={w}")
        arr = self.levels[level]
        out = np.full((h, w, 3), BACKGROUND_RGB, dtype=np.uint8)
        wanted = Box(y, x, h, w)
        inside = wanted.clip(arr.shape)
        if inside is not None:
            out[inside.relative_to(wanted)] = np.asarray(arr[inside.slices].compute())
        return out

    def summary(self) -> dict:
        """A JSON-ready description: levels, shapes, chunks, mpp, magnification, associated."""
        return {
            "path": str(self.path),
            "name": self.name,
            "format": self.format,
            "mpp": self.mpp,
            "mpp_known": self.mpp is not None,
            "magnification": self.magnification,
            "levels": [
                {
                    "level": i,
                    "shape": list(lv.shape),
                    "chunks_px": [int(lv.chunksize[0]), int(lv.chunksize[1])],
                    "downsample": round(self.downsamples[i], 4),
                    "mpp": None if self.level_mpp(i) is None else round(self.level_mpp(i), 5),
                    "built": i >= len(self.levels) - self.built_levels,
                }
                for i, lv in enumerate(self.levels)
            ],
            "associated": sorted(self.associated),
            "notes": self.notes,
        }


def downsample2(level: da.Array) -> da.Array:
    """Halve a (y, x, 3) uint8 level by 2x2 mean, lazily, chunk-aligned (odd edges trimmed)."""
    h, w = (level.shape[0] // 2) * 2, (level.shape[1] // 2) * 2
    level = level[:h, :w]
    cy, cx = level.chunksize[:2]
    # coarsen needs even chunks; rechunking to even sizes costs at most one neighbouring tile.
    level = level.rechunk((max(2, cy - cy % 2), max(2, cx - cx % 2), -1))
    small = da.coarsen(np.mean, level, {0: 2, 1: 2}, trim_excess=True, dtype=np.float32)
    # Keep the source's chunk size, or chunks would shrink 4x per level and napari would fetch
    # thousands of tiny tasks at low zoom.
    return small.round().astype(np.uint8).rechunk((cy, cx, -1))


def complete_pyramid(levels: list[da.Array]) -> tuple[list[da.Array], int]:
    """Add lazily downsampled levels to a pyramid that is too shallow for smooth viewing.

    Returns the levels and how many were built.
    """
    levels = list(levels)
    built = 0
    if max(levels[0].shape[:2]) <= PYRAMID_MIN_SIDE_PX:
        return levels, 0
    while max(levels[-1].shape[:2]) > PYRAMID_TOP_SIDE_PX:
        levels.append(downsample2(levels[-1]))
        built += 1
    return levels, built


def display_name(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".svs", ".ndpi", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
