"""Memory LRU, disk cache restart, and atomic writes under simulated failures."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from napari_virtualstain.core.engine.cache import DiskCache, MemoryLRU, TileCache, TileKey


def tile(value: int, side: int = 16) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 255, (side, side, 3), dtype=np.uint8)


def key(row: int, col: int = 0, ns: str = "ns") -> TileKey:
    return TileKey(ns, 0, row, col, 16)


def test_lru_evicts_least_recently_used_within_byte_budget():
    one = tile(0).nbytes
    lru = MemoryLRU(budget_bytes=3 * one)
    for i in range(3):
        lru.put(key(i), tile(i))
    assert lru.get(key(0)) is not None  # 0 is now the most recent
    lru.put(key(3), tile(3))
    assert lru.get(key(1)) is None  # 1 was the least recently used
    assert lru.get(key(0)) is not None and lru.get(key(3)) is not None
    assert lru.nbytes <= 3 * one and len(lru) == 3


def test_lru_refuses_an_item_larger_than_the_budget():
    lru = MemoryLRU(budget_bytes=10)
    lru.put(key(0), tile(0))
    assert len(lru) == 0 and lru.nbytes == 0


def test_disk_cache_survives_a_restart(tmp_path):
    first = DiskCache(tmp_path / "c")
    small = tile(5)[:10, :12]  # a border tile smaller than the layout side
    first.put(key(2, 3), small)
    again = DiskCache(tmp_path / "c")
    np.testing.assert_array_equal(again.get(key(2, 3)), small)
    assert again.get(key(3, 3)) is None
    assert again.count("ns", 0) == 1


def test_tile_cache_counts_hits_and_promotes_disk_tiles(tmp_path):
    TileCache(MemoryLRU(), DiskCache(tmp_path)).put(key(1), tile(1))
    cache = TileCache(MemoryLRU(), DiskCache(tmp_path))
    assert cache.get(key(1)) is not None
    assert cache.get(key(1)) is not None
    assert cache.get(key(9)) is None
    assert (cache.stats.disk_hits, cache.stats.memory_hits, cache.stats.misses) == (1, 1, 1)


def test_crash_before_the_marker_leaves_no_servable_tile(tmp_path, monkeypatch):
    disk = DiskCache(tmp_path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(DiskCache, "_write_marker", crash)
    with pytest.raises(KeyboardInterrupt):
        disk.put(key(0), tile(0))
    monkeypatch.undo()
    assert DiskCache(tmp_path).get(key(0)) is None


def test_corrupted_chunk_is_a_miss_not_bad_pixels(tmp_path):
    disk = DiskCache(tmp_path)
    disk.put(key(0), tile(0))
    chunks = [p for p in (tmp_path / "ns").rglob("*") if p.is_file() and "c" in p.parts[-6:]]
    chunks = [p for p in chunks if p.suffix == "" and p.name.isdigit()]
    assert chunks, "expected a zarr chunk file"
    for p in chunks:  # a disk-full truncation
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    assert DiskCache(tmp_path).get(key(0)) is None


def test_rewrite_with_different_pixels_never_serves_a_mix(tmp_path, monkeypatch):
    disk = DiskCache(tmp_path)
    disk.put(key(0), tile(0))

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DiskCache, "_write_marker", full_disk)
    cache = TileCache(MemoryLRU(), disk)
    cache.put(key(0), tile(1))  # the disk copy fails; no exception reaches the caller
    np.testing.assert_array_equal(cache.get(key(0)), tile(1))  # memory still serves it
    monkeypatch.undo()
    # The old marker was removed before rewriting, so the half-updated disk tile is a miss.
    assert DiskCache(tmp_path).get(key(0)) is None
