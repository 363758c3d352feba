"""Layer frames: pixels <-> world <-> µm per pyramid level, regions of a view or an ROI, and the
exact registration of two layers shown in one world."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.geometry import Box
from napari_virtualstain.core.registration.frames import (
    LayerFrame,
    is_identity,
    roi_region,
    view_region,
    world_registration,
)

# a 0.25 µm/px slide shown in a world of 0.5 units per pixel (world = 2 µm), shifted
FRAME = LayerFrame(((800, 600), (400, 300), (200, 150)), mpp=0.25, scale=(0.5, 0.5),
                   translate=(10.0, -4.0))  # fmt: skip


def test_pixels_world_round_trip_and_level_centres():
    pts = np.array([[0.0, 0.0], [12.5, 7.0], [399.0, 299.0]])
    for level in range(3):
        back = FRAME.world_to_px(FRAME.px_to_world(pts, level), level)
        assert np.allclose(back, pts)
    # level-1 pixel 0 covers level-0 pixels 0 and 1: its centre is level-0 pixel 0.5
    assert np.allclose(FRAME.px_to_world([0, 0], 1), FRAME.px_to_world([0.5, 0.5], 0))
    assert FRAME.level_mpps == [0.25, 0.5, 1.0] and FRAME.um_per_world == 0.5
    assert np.allclose(FRAME.world_to_um(FRAME.px_to_world([8, 4], 0)), [2.0, 1.0])


def test_placement_of_a_region_map():
    scale, translate = FRAME.placement(1, Box.from_corners(10, 20, 50, 60))
    assert scale == (1.0, 1.0)
    assert np.allclose(translate, FRAME.px_to_world([10, 20], 1))
    assert np.allclose(translate, (10 + 0.5 * 20.5, -4 + 0.5 * 40.5))


def test_world_registration_agrees_with_the_world():
    other = LayerFrame(((400, 300),), mpp=0.5, scale=(1.0, 1.0), translate=(10.5, -3.5))
    reg = world_registration(FRAME, other)
    rng = np.random.default_rng(0)
    px = rng.uniform(0, 500, (20, 2))
    via_world = other.world_to_px(FRAME.px_to_world(px, 0), 0) * other.mpp
    assert np.allclose(reg.fixed_to_moving_um(px * FRAME.mpp), via_world)
    assert reg.is_affine and not is_identity(reg, FRAME, other)
    assert is_identity(world_registration(FRAME, FRAME), FRAME, FRAME)


def test_view_region_picks_the_level_that_fits():
    # the whole layer in view, reported by napari at data level 2
    level, box = view_region(FRAME, [[0, 0], [199, 149]], 2, max_side_px=450)
    assert level == 1 and box.corners == (0, 0, 400, 300)
    level, box = view_region(FRAME, [[100, 100], [199, 199]], 0, max_side_px=2048)
    assert level == 0 and box.corners == (100, 100, 200, 200)


def test_roi_region_honours_translate_and_level():
    # a 40 x 60 level-0 px rectangle from px (100, 200), given in world units
    corners_px = np.array([[100, 200], [100, 260], [140, 260], [140, 200]], float) - 0.5
    world = FRAME.px_to_world(corners_px, 0)
    level, box, mask = roi_region(FRAME, "rectangle", world, max_side_px=2048)
    assert level == 0 and box.corners == (100, 200, 140, 260) and mask.all()
    level, box, mask = roi_region(FRAME, "rectangle", world, max_side_px=35)
    assert level == 1 and box.corners == (50, 100, 70, 130) and mask.shape == (20, 30)


def test_box_and_validation_errors():
    with pytest.raises(ValueError, match="outside the layer"):
        FRAME.box_of_world_rect((-100.0, -100.0), (-50.0, -50.0), 0)
    with pytest.raises(ValueError, match="mpp and scale"):
        LayerFrame(((10, 10),), mpp=0.0)
    with pytest.raises(ValueError, match="at least 1 x 1"):
        LayerFrame((), mpp=0.5)
    assert FRAME.covers(FRAME, 2, Box(0, 0, 200, 150))
    small = LayerFrame(((100, 100),), mpp=0.25, scale=(0.5, 0.5), translate=(10.0, -4.0))
    assert not small.covers(FRAME, 0, Box(0, 0, 200, 200))
