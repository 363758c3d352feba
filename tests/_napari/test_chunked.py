"""The overlay's chunked in-memory image reads and writes like a numpy array."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain._napari.chunked import ChunkedImage


def test_reads_match_numpy_for_slices_steps_ints_and_ellipsis():
    rng = np.random.default_rng(0)
    ref = np.zeros((301, 517, 4), np.uint8)
    image = ChunkedImage((301, 517, 4), 64)
    for _ in range(40):
        y0, x0 = int(rng.integers(0, 300)), int(rng.integers(0, 516))
        y1, x1 = int(rng.integers(y0 + 1, 302)), int(rng.integers(x0 + 1, 518))
        value = rng.integers(0, 255, (y1 - y0, x1 - x0, 4), dtype=np.uint8)
        ref[y0:y1, x0:x1] = value
        image[y0:y1, x0:x1] = value
    assert np.array_equal(np.asarray(image), ref)
    for _ in range(200):
        sy = slice(
            int(rng.integers(-50, 301)), int(rng.integers(-50, 320)), int(rng.integers(1, 9))
        )
        sx = slice(int(rng.integers(0, 517)), None, int(rng.integers(1, 9)))
        y, x = int(rng.integers(0, 301)), int(rng.integers(-517, 517))
        for key in [(sy, sx), (sy, sx, 3), (sy, sx, slice(0, 3)), (y, sx), (sy, x), (Ellipsis, 2)]:
            assert np.array_equal(image[key], ref[key]), key


def test_unwritten_chunks_cost_nothing_and_read_as_transparent():
    image = ChunkedImage((40_000, 40_000, 4), 1024)
    assert image.nbytes_stored == 0
    assert not image[5000:6000, 7000:9000].any()
    image[1100:1200, 2100:2200] = 255  # inside one chunk
    assert image.nbytes_stored == 1024 * 1024 * 4
    assert image.shape == (40_000, 40_000, 4) and image.chunks == (1024, 1024, 4)


def test_writes_take_plain_slices_only():
    image = ChunkedImage((64, 64, 4), 16)
    with pytest.raises(IndexError):
        image[::2, :] = 1
    with pytest.raises(IndexError):
        image[:, :, 0] = 1
