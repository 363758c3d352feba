"""An in-memory (y, x, c) image kept as numpy chunks, for napari to slice on its GUI thread.

The overlay's pyramid levels are mostly empty (a 40k slide's level 0 is 6.4 GB of RGBA if
allocated), so they are kept as chunks that exist only once written; the rest reads as zeros
(alpha 0: transparent). They were zarr v3 arrays in memory: every read from napari went
through zarr's asynchronous event loop, and ``bench_gui_latency --dump-after-s`` caught the GUI
thread waiting there 0.2 s and more while a worker wrote tiles. Here a read is numpy copies
under a lock that a write holds for one chunk copy at a time.
"""

from __future__ import annotations

import threading

import numpy as np


class ChunkedImage:
    """A (height, width, channels) array-like: ``shape``, ``dtype``, ``ndim``, ``chunks``,
    ``__getitem__`` (ints, slices with positive steps, Ellipsis), ``__setitem__`` (unit-step
    slices) and ``__array__``.
    """

    def __init__(self, shape: tuple[int, int, int], chunk_px: int, dtype=np.uint8) -> None:
        if len(shape) != 3 or min(shape) <= 0 or chunk_px <= 0:
            raise ValueError(
                f"expected a (y, x, c) shape and chunk_px > 0, got {shape}, {chunk_px}"
            )
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3
        self.chunk_px = int(chunk_px)
        self.chunks = (min(self.chunk_px, self.shape[0]), min(self.chunk_px, self.shape[1]),
                       self.shape[2])  # fmt: skip
        self._blocks: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    @property
    def nbytes_stored(self) -> int:
        """Bytes of the chunks written so far."""
        return sum(b.nbytes for b in self._blocks.values())

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def _key(self, key) -> tuple[range, range, object, tuple[bool, bool]]:
        """Rows, columns (as ranges), the channel index, and which axes an int dropped."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (3 - len(key))
        if len(key) != 3:
            raise IndexError(f"too many indices for a 3-d image: {key}")
        axes, dropped = [], []
        for k, n in zip(key[:2], self.shape[:2], strict=True):
            if isinstance(k, int | np.integer):
                k = int(k) + n if k < 0 else int(k)
                if not 0 <= k < n:
                    raise IndexError(f"index {k} out of range for size {n}")
                axes.append(range(k, k + 1))
                dropped.append(True)
            elif isinstance(k, slice):
                r = range(*k.indices(n))
                if r.step <= 0:
                    raise IndexError("only positive slice steps are supported")
                axes.append(r)
                dropped.append(False)
            else:
                raise IndexError(f"unsupported index {k!r}")
        return axes[0], axes[1], key[2], (dropped[0], dropped[1])

    def __getitem__(self, key) -> np.ndarray:
        rows, cols, chan, dropped = self._key(key)
        out = np.zeros((len(rows), len(cols), self.shape[2]), self.dtype)
        if len(rows) and len(cols):
            for (by, bx), (sel_out, sel_block) in self._pieces(rows, cols):
                with self._lock:
                    block = self._blocks.get((by, bx))
                    if block is not None:
                        out[sel_out] = block[sel_block]
        out = out[..., chan]
        if dropped[0] and dropped[1]:
            return out[0, 0]
        if dropped[0]:
            return out[0]
        if dropped[1]:
            return out[:, 0]
        return out

    def _pieces(self, rows: range, cols: range):
        """For each chunk the selection meets: (chunk index, (out selection, chunk selection))."""
        c = self.chunk_px
        for by in range(rows[0] // c, rows[-1] // c + 1):
            ry = _sub(rows, by * c, (by + 1) * c)
            if ry is None:
                continue
            for bx in range(cols[0] // c, cols[-1] // c + 1):
                rx = _sub(cols, bx * c, (bx + 1) * c)
                if rx is None:
                    continue
                (oy, ly), (ox, lx) = ry, rx
                yield (by, bx), ((oy, ox), (ly, lx))

    def __setitem__(self, key, value) -> None:
        rows, cols, chan, dropped = self._key(key)
        if rows.step != 1 or cols.step != 1 or chan != slice(None) or any(dropped):
            raise IndexError("writes take unit-step (y, x) slices over every channel")
        if not (len(rows) and len(cols)):
            return
        value = np.broadcast_to(
            np.asarray(value, self.dtype), (len(rows), len(cols), self.shape[2])
        )
        c = self.chunk_px
        for (by, bx), (sel_value, sel_block) in self._pieces(rows, cols):
            with self._lock:
                block = self._blocks.get((by, bx))
                if block is None:
                    h = min(c, self.shape[0] - by * c)
                    w = min(c, self.shape[1] - bx * c)
                    block = self._blocks[(by, bx)] = np.zeros((h, w, self.shape[2]), self.dtype)
                block[sel_block] = value[sel_value]


def _sub(r: range, lo: int, hi: int) -> tuple[slice, slice] | None:
    """The part of ``r`` within [lo, hi): (its positions in r, its offsets from lo), as slices."""
    first = max(0, -(-(lo - r.start) // r.step))
    last = min(len(r), -(-(hi - r.start) // r.step))
    if first >= last:
        return None
    start = r[first] - lo
    return slice(first, last), slice(start, start + (last - first - 1) * r.step + 1, r.step)
