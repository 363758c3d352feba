"""Tile grids, halos, blending windows and level mapping."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.engine.tiling import (
    Box,
    TileGrid,
    blend_weights,
    checker,
    map_box,
    order_centre_out,
    ramp,
    round_up,
)


def test_cores_partition_the_image_exactly_once():
    grid = TileGrid((130, 75), tile_px=32, halo_px=8)
    cover = np.zeros((130, 75), int)
    for r, c in grid.tiles():
        cover[grid.core(r, c).slices] += 1
    assert (cover == 1).all()
    assert (grid.n_rows, grid.n_cols) == (5, 3)
    assert sum(grid.chunks[0]) == 130 and sum(grid.chunks[1]) == 75


def test_padded_box_adds_halo_and_clips_at_the_border():
    grid = TileGrid((100, 100), tile_px=32, halo_px=8)
    assert grid.padded(0, 0) == Box(0, 0, 40, 40)
    assert grid.padded(1, 1) == Box(24, 24, 48, 48)
    assert grid.padded(3, 3) == Box(88, 88, 12, 12)  # last core is 4 px, clipped halo


def test_blend_weights_are_a_partition_of_unity():
    grid = TileGrid((150, 110), tile_px=40, halo_px=12, blend_px=10)
    total = np.zeros((150, 110), np.float64)
    for r, c in grid.tiles():
        total[grid.contribution(r, c).slices] += blend_weights(grid, r, c)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    # and the window really is smooth: it is not 1 everywhere inside a tile
    assert blend_weights(grid, 1, 1).min() < 0.05


def test_ramp_is_symmetric_complement():
    r = ramp(16)
    np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-6)
    assert r.min() > 0 and np.all(np.diff(r) > 0)


def test_tiles_in_box_and_centre_out_order():
    grid = TileGrid((1000, 1000), tile_px=100)
    tiles = grid.tiles_in_box(Box(150, 250, 300, 200))
    assert tiles == [(r, c) for r in range(1, 5) for c in range(2, 5)]
    ordered = order_centre_out(tiles, grid, (300, 350))
    assert ordered[0] in [(2, 3), (3, 3)]
    assert ordered[-1] in [(1, 2), (1, 4), (4, 2), (4, 4)]
    assert grid.tiles_in_box(Box(2000, 0, 10, 10)) == []


def test_centre_out_order_uses_the_clipped_core_centres_and_keeps_ties_in_order():
    grid = TileGrid((250, 1000), tile_px=100)  # the last row's cores are 50 px high
    tiles = list(grid.tiles())[::-1]
    centre = (240.0, 510.0)
    ordered = order_centre_out(tiles, grid, centre)
    assert sorted(ordered) == sorted(tiles)
    distances = [np.hypot(*np.subtract(grid.core(*t).centre, centre)) for t in ordered]
    assert np.all(np.diff(distances) >= 0)
    assert ordered[0] == (2, 5)  # its clipped core's centre (225, 550) is nearest
    # (2, 4) and (2, 6) are equally far from (225, 550): they keep their given order
    assert order_centre_out([(2, 6), (2, 4)], grid, (225.0, 550.0)) == [(2, 6), (2, 4)]
    assert order_centre_out([], grid, centre) == []
    with pytest.raises(IndexError):
        order_centre_out([(3, 0)], grid, centre)


def test_map_box_between_levels_and_round_up():
    b = map_box(Box(100, 200, 50, 60), from_downsample=1.0, to_downsample=4.0)
    assert b == Box(25, 50, 13, 15)
    assert map_box(b, 4.0, 1.0) == Box(100, 200, 52, 60)
    assert round_up(61, 4) == 64 and round_up(64, 4) == 64


def test_invalid_grids_are_refused():
    with pytest.raises(ValueError, match="tile_px"):
        TileGrid((10, 10), tile_px=0)
    with pytest.raises(ValueError, match="blend_px"):
        TileGrid((10, 10), tile_px=8, halo_px=2, blend_px=4)
    with pytest.raises(IndexError):
        TileGrid((10, 10), tile_px=8).core(5, 0)


def test_checker_has_two_tones():
    c = checker(32, 32, square_px=8)
    assert set(np.unique(c)) == {153, 204}
    assert (c[0, 0] != c[0, 8]).all()
