"""The one geometry: Box, level pickers (TileGrid is tested in tests/core/engine/test_tiling.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.geometry import (
    Box,
    level_for_mpp,
    level_for_size,
    level_mpps,
    map_box,
)


def test_box_corners_and_size_views_agree():
    box = Box.from_corners(10, 20, 40, 25)
    assert box == Box(10, 20, 30, 5)
    assert (box.y1, box.x1) == (40, 25)
    assert box.corners == (10, 20, 40, 25)
    assert box.shape == (30, 5) and box.origin == (10, 20)
    assert box.centre == (25.0, 22.5)
    image = np.arange(50 * 50).reshape(50, 50)
    assert image[box.slices].shape == box.shape
    assert image[box.slices][0, 0] == image[10, 20]


def test_box_is_not_a_tuple():
    """(y, x, h, w) and (y0, x0, y1, x1) were both tuples: unpacking a Box must fail loudly."""
    with pytest.raises(TypeError):
        y0, x0, y1, x1 = Box(1, 2, 3, 4)
    assert Box(0, 0, 10, 10) != (0, 0, 10, 10)
    with pytest.raises(ValueError, match="non-negative"):
        Box.from_corners(10, 0, 5, 5)


def test_intersect_clip_and_grow():
    a, b = Box(0, 0, 10, 10), Box(5, 8, 10, 10)
    assert a.intersect(b) == Box(5, 8, 5, 2) == b.intersect(a)
    assert a.intersect(Box(10, 0, 5, 5)) is None  # touching edges do not overlap
    assert Box(-5, 90, 20, 20).clip((100, 100, 3)) == Box(0, 90, 15, 10)
    assert Box(200, 0, 5, 5).clip((100, 100)) is None
    assert Box(2, 3, 4, 4).grown(5) == Box(-3, -2, 14, 14)
    assert Box(2, 3, 4, 4).grown(5, (8, 100)) == Box(0, 0, 8, 12)
    with pytest.raises(ValueError, match="outside"):
        Box(200, 0, 5, 5).grown(1, (100, 100))
    inner = Box(5, 8, 2, 2)
    assert a.relative_to(a) == a.slices
    assert inner.relative_to(Box(4, 4, 10, 10)) == (slice(1, 3), slice(4, 6))


def test_scaled_rounds_outwards_and_matches_map_box():
    box = Box(101, 203, 50, 61)
    half = box.scaled(0.5)
    # outward: the scaled box covers the original once mapped back
    back = half.scaled(2.0)
    assert back.y <= box.y and back.x <= box.x and back.y1 >= box.y1 and back.x1 >= box.x1
    assert half == map_box(box, from_downsample=1.0, to_downsample=2.0) == Box(50, 101, 26, 31)
    assert Box(3, 3, 1, 1).scaled(0.01) == Box(0, 0, 1, 1)  # never empty


def test_level_for_mpp_is_the_coarsest_not_coarser_than_asked():
    mpps = [0.25, 0.5, 1.0, 2.0]
    assert level_for_mpp(mpps, 0.5) == 1
    assert level_for_mpp(mpps, 0.504) == 1  # within 1 %
    assert level_for_mpp(mpps, 0.7) == 1  # never a level coarser than asked
    assert level_for_mpp(mpps, 0.1) == 0  # none fine enough: level 0
    assert level_for_mpp(mpps, 5.0) == 3
    assert level_for_mpp(mpps, 0.56, tolerance=0.15) == 1  # 1.0 > 0.56 * 1.15
    assert level_for_mpp(mpps, 0.9, tolerance=0.15) == 2
    assert level_for_mpp([None, None], 0.5) == 0  # pixel size unknown
    assert level_mpps(0.25, [1.0, 2.0, 4.0]) == [0.25, 0.5, 1.0]
    assert level_mpps(None, [1.0, 2.0]) == [None, None]
    with pytest.raises(ValueError):
        level_for_mpp(mpps, 0.0)


def test_level_for_size_finest_that_fits_or_coarsest_big_enough():
    shapes = [(4000, 3000, 3), (2000, 1500, 3), (1000, 750, 3), (500, 375, 3)]
    assert level_for_size(shapes, max_px=1024) == 2
    assert level_for_size(shapes, max_px=4000) == 0
    assert level_for_size(shapes, max_px=100) == 3  # none fits: the coarsest
    assert level_for_size(shapes, min_px=1024) == 1
    assert level_for_size(shapes, min_px=500) == 3
    assert level_for_size(shapes, min_px=10_000) == 0  # none is big enough: level 0
    # plain sizes (a region's side per level) work alike
    assert level_for_size([3000.0, 1500.0, 750.0], max_px=2048) == 1
    assert level_for_size(np.array([[400, 300], [200, 150]]), max_px=250) == 1  # numpy rows
    with pytest.raises(ValueError, match="exactly one"):
        level_for_size(shapes)
    with pytest.raises(ValueError, match="exactly one"):
        level_for_size(shapes, max_px=1, min_px=1)


def test_training_tiles_are_not_the_tile_grid():
    """Why ``train.tiles.grid_starts`` stays a second tiler: a training set needs every tile
    whole (``tile_px`` square, the last one shifted back inside the image) and may overlap
    (stride < tile); the TileGrid partitions the image, so its last core is cut short."""
    from napari_virtualstain.core.geometry import TileGrid
    from napari_virtualstain.core.train.tiles import grid_starts

    starts = grid_starts(300, tile_px=128, stride_px=96)
    assert starts == [0, 96, 172]  # overlapping, the last one shifted back to end at 300
    assert all(s + 128 <= 300 for s in starts)
    grid = TileGrid((300, 300), tile_px=128)
    assert [grid.core(r, 0).y for r in range(grid.n_rows)] == [0, 128, 256]
    assert grid.core(grid.n_rows - 1, 0).h == 300 - 256  # short: no good as a training tile
