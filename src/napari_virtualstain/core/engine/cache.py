"""Tile caches: an in-memory LRU with a byte budget, and an atomic on-disk zarr cache.

A tile is keyed by (namespace, level, row, col). The namespace is a hash of everything that
changes the pixels: slide identity, model sha256, normalisation-statistics hash and the engine
settings (see :func:`napari_virtualstain.core.engine.stain.StainPlan.namespace`).

The disk cache writes the tile's zarr chunk first and only then, atomically (temp file +
``os.replace``), a small marker holding the tile's shape and CRC32. A tile without a marker, or
whose bytes do not match the marker's CRC, is a miss: a crash or a full disk never leaves a
tile that is later served as good.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET_BYTES = 1 << 30
# Sparse zarr arrays: the shape is only metadata, unwritten chunks take no disk space.
_MAX_GRID = 1 << 16


class TileKey(NamedTuple):
    """Identity of one cached tile. ``side_px`` is the largest tile side of its layout."""

    namespace: str
    level: int
    row: int
    col: int
    side_px: int


class MemoryLRU:
    """A thread-safe least-recently-used map of numpy tiles with a byte budget."""

    def __init__(self, budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES) -> None:
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self._items: OrderedDict[TileKey, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: TileKey) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: TileKey) -> np.ndarray | None:
        with self._lock:
            tile = self._items.get(key)
            if tile is not None:
                self._items.move_to_end(key)
            return tile

    def put(self, key: TileKey, tile: np.ndarray) -> None:
        if tile.nbytes > self.budget_bytes:
            return  # would evict everything and still not fit
        tile = np.ascontiguousarray(tile)
        tile.setflags(write=False)  # shared between threads and layers: never mutated
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = tile
            self._bytes += tile.nbytes
            while self._bytes > self.budget_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


class DiskCache:
    """Tiles in zarr arrays under ``root/<namespace>/level_<L>``, one chunk per tile."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._arrays: dict[tuple[str, int], object] = {}
        self._lock = threading.Lock()

    def _marker(self, key: TileKey) -> Path:
        return self.root / key.namespace / f"level_{key.level}.done" / f"{key.row}_{key.col}.json"

    def _array(self, key: TileKey, create: bool):
        import zarr

        ident = (key.namespace, key.level)
        with self._lock:
            arr = self._arrays.get(ident)
            if arr is not None:
                return arr
            path = self.root / key.namespace / f"level_{key.level}"
            if path.exists():
                arr = zarr.open_array(str(path), mode="r+")
            elif create:
                s = key.side_px
                arr = zarr.create_array(
                    str(path),
                    shape=(_MAX_GRID, _MAX_GRID, s, s, 3),
                    chunks=(1, 1, s, s, 3),
                    dtype="uint8",
                    fill_value=0,
                )
            else:
                return None
            self._arrays[ident] = arr
            return arr

    def get(self, key: TileKey) -> np.ndarray | None:
        marker = self._marker(key)
        if not marker.exists():
            return None
        try:
            meta = json.loads(marker.read_text())
            arr = self._array(key, create=False)
            if arr is None:
                return None
            tile = np.asarray(arr[key.row, key.col, : meta["h"], : meta["w"]])
        except Exception as err:  # a damaged chunk or marker is a miss, never an error
            log.warning("disk cache: unreadable tile %s (%s); recomputing", key, err)
            return None
        if zlib.crc32(np.ascontiguousarray(tile).tobytes()) != meta["crc32"]:
            log.warning("disk cache: checksum mismatch for %s; recomputing", key)
            return None
        return tile

    def put(self, key: TileKey, tile: np.ndarray) -> None:
        h, w = tile.shape[:2]
        if h > key.side_px or w > key.side_px:
            raise ValueError(f"tile {tile.shape} larger than the layout side {key.side_px}")
        arr = self._array(key, create=True)
        self._marker(key).unlink(missing_ok=True)  # a rewrite is not valid until re-marked
        arr[key.row, key.col, :h, :w] = tile
        crc = zlib.crc32(np.ascontiguousarray(tile).tobytes())
        self._write_marker(key, {"h": int(h), "w": int(w), "crc32": crc})

    def _write_marker(self, key: TileKey, meta: dict) -> None:
        marker = self._marker(key)
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(f".tmp{os.getpid()}_{threading.get_ident()}")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, marker)

    def count(self, namespace: str, level: int) -> int:
        """How many valid-looking (marked) tiles a namespace level holds."""
        folder = self.root / namespace / f"level_{level}.done"
        return len(list(folder.glob("*.json"))) if folder.exists() else 0


@dataclass
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0


class TileCache:
    """Memory LRU in front of an optional disk cache; safe to share between threads."""

    def __init__(self, memory: MemoryLRU | None = None, disk: DiskCache | None = None) -> None:
        self.memory = memory if memory is not None else MemoryLRU()
        self.disk = disk
        self.stats = CacheStats()

    def get(self, key: TileKey) -> np.ndarray | None:
        tile = self.memory.get(key)
        if tile is not None:
            self.stats.memory_hits += 1
            return tile
        if self.disk is not None:
            tile = self.disk.get(key)
            if tile is not None:
                self.stats.disk_hits += 1
                self.memory.put(key, tile)
                return tile
        self.stats.misses += 1
        return None

    def contains(self, key: TileKey) -> bool:
        """Whether ``key`` is cached, without counting a hit or reading the disk tile."""
        if key in self.memory:
            return True
        return self.disk is not None and self.disk._marker(key).exists()

    def put(self, key: TileKey, tile: np.ndarray) -> None:
        self.memory.put(key, tile)
        if self.disk is not None:
            try:
                self.disk.put(key, tile)
            except OSError as err:  # a full disk costs the disk copy, not the result
                log.warning("disk cache: could not write %s (%s)", key, err)


_SHARED_MEMORY: MemoryLRU | None = None
_SHARED_DISK: dict[str, DiskCache] = {}
_SHARED_LOCK = threading.Lock()


def shared_cache(
    disk_dir: str | os.PathLike | None = None, budget_bytes: int | None = None
) -> TileCache:
    """The process-wide cache: one memory LRU shared by the viewer and batch runs.

    ``budget_bytes`` resizes the shared LRU; ``disk_dir`` adds that folder's disk cache.
    """
    global _SHARED_MEMORY
    with _SHARED_LOCK:
        if _SHARED_MEMORY is None:
            _SHARED_MEMORY = MemoryLRU(budget_bytes or DEFAULT_MEMORY_BUDGET_BYTES)
        elif budget_bytes is not None:
            _SHARED_MEMORY.budget_bytes = int(budget_bytes)
        disk = None
        if disk_dir is not None:
            key = str(Path(disk_dir).resolve())
            disk = _SHARED_DISK.setdefault(key, DiskCache(disk_dir))
        return TileCache(_SHARED_MEMORY, disk)
