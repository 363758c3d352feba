"""Read errors that surface late (when a chunk is decoded) become errors naming the file.

Slides are lazy: a corrupt JPEG tile of an SVS or a damaged blosc chunk of an OME-Zarr fails
only when that tile is computed, deep in dask. :class:`GuardedArray` wraps a level's zarr
array so that such a failure is a :class:`SlideReadError` naming the file, the level and the
pixel position; and, for OME-Zarr on disk, so that a chunk missing inside the tissue is an
error instead of silently reading as white fill.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import dask.array as da
import numpy as np

from .errors import SlideReadError

# A missing chunk is background when the coarser level shows no more than this much tissue.
_TISSUE_GREY_MAX = 230
_TISSUE_FRACTION_MIN = 0.01


class GuardedArray:
    """An array-like over a zarr array whose read failures name the file and the region.

    Parameters
    ----------
    array : zarr.Array
    path : Path
        The slide, for messages.
    level : int
        The pyramid level, for messages.
    coarser : GuardedArray or None
        The next coarser level of the file (OME-Zarr), consulted when a chunk is missing.
    yx_axes : tuple of int
        Which axes of ``array`` are y and x.
    """

    def __init__(self, array, path, level: int, coarser=None, yx_axes=(0, 1)) -> None:
        self.array = array
        self.path = path
        self.level = level
        self.coarser = coarser
        self.yx_axes = yx_axes
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self._folder = _local_folder(array)

    def __getitem__(self, key):
        try:
            data = self.array[key]
        except Exception as exc:
            raise SlideReadError(
                self.path,
                f"corrupt image data at level {self.level}, {self._where(key)} "
                f"({type(exc).__name__}: {exc})",
            ) from exc
        if self._folder is not None:
            self._check_missing(key)
        return data

    def _where(self, key) -> str:
        key = key if isinstance(key, tuple) else (key,)
        ys, xs = (key[a] if a < len(key) else slice(None) for a in self.yx_axes)
        where = f"pixels y {_span(ys)}, x {_span(xs)}"
        try:  # the chunk (tile) the region starts in, in the store's own key spelling
            starts = [
                (key[i].start or 0) if i < len(key) and isinstance(key[i], slice) else 0
                for i in range(self.ndim)
            ]
            coords = tuple(s // c for s, c in zip(starts, self.array.chunks, strict=True))
            name = self.array.metadata.encode_chunk_key(coords)
            return f"{where} (chunk {name})"
        except Exception:  # noqa: BLE001 - a store without chunk keys: the pixels say enough
            return where

    def _check_missing(self, key) -> None:
        """Raise when a chunk of ``key`` is absent from disk but the coarser level shows tissue."""
        key = key if isinstance(key, tuple) else (key,)
        ranges = []
        for axis, (size, chunk) in enumerate(zip(self.shape, self.array.chunks, strict=True)):
            sl = key[axis] if axis < len(key) and isinstance(key[axis], slice) else slice(None)
            start, stop, _ = sl.indices(size)
            ranges.append(range(start // chunk, max(start // chunk + 1, -(-stop // chunk))))
        for coords in itertools.product(*ranges):
            name = self.array.metadata.encode_chunk_key(coords)
            if (self._folder / name).exists():
                continue
            if self._tissue_at(coords):
                y, x = (coords[a] * self.array.chunks[a] for a in self.yx_axes)
                raise SlideReadError(
                    self.path,
                    f"chunk {name} of level {self.level} (pixels y {y}, x {x}) is missing but "
                    "the coarser level shows tissue there; the store is incomplete",
                )

    def _tissue_at(self, coords) -> bool:
        if self.coarser is None:
            return False  # nothing to compare with: a missing chunk may be empty background
        ay, ax = self.yx_axes
        fy = self.coarser.shape[ay] / self.shape[ay]
        fx = self.coarser.shape[ax] / self.shape[ax]
        cy, cx = self.array.chunks[ay], self.array.chunks[ax]
        y0, x0 = int(coords[ay] * cy * fy), int(coords[ax] * cx * fx)
        y1, x1 = (
            max(y0 + 1, int((coords[ay] + 1) * cy * fy)),
            max(x0 + 1, int((coords[ax] + 1) * cx * fx)),
        )
        key = [slice(None)] * self.ndim
        key[ay], key[ax] = slice(y0, y1), slice(x0, x1)
        region = np.asarray(self.coarser[tuple(key)])
        if region.size == 0:
            return False
        other = tuple(i for i in range(region.ndim) if i not in self.yx_axes)
        darkest = region.min(axis=other) if other else region
        return float((darkest < _TISSUE_GREY_MAX).mean()) >= _TISSUE_FRACTION_MIN


def _span(sl) -> str:
    if isinstance(sl, slice):
        return f"{sl.start or 0}..{'end' if sl.stop is None else sl.stop}"
    return str(sl)


def _local_folder(array) -> Path | None:
    """The array's folder when it is a zarr array on local disk (else None: not checked)."""
    store = getattr(array, "store", None)
    root = getattr(store, "root", None)
    metadata = getattr(array, "metadata", None)
    if root is None or not hasattr(metadata, "encode_chunk_key"):
        return None
    return Path(root) / array.path


def guarded_dask(array, path, level: int, coarser: GuardedArray | None = None, yx_axes=(0, 1)):
    """``da.from_zarr`` with read failures naming the file; returns (dask array, guard)."""
    import os

    from dask.base import tokenize

    guard = GuardedArray(array, path, level, coarser, yx_axes)
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = None
    name = f"slide-level-{level}-" + tokenize(
        str(path), getattr(array, "path", ""), guard.shape, stamp
    )
    arr = da.from_array(guard, chunks=array.chunks, asarray=False, fancy=False, name=name)
    return arr, guard
