"""ROIs in µm: shapes, masks, naming and the errors for bad ones."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.roi import ROI, name_rois, validate_rois


@pytest.mark.parametrize(
    "roi",
    [
        ROI.rectangle("r", 10.0, 20.0, 30.0, 40.0),
        ROI.ellipse("e", 50.0, 60.0, 20.0, 30.0),
        ROI.polygon("p", [(5, 5), (5, 80), (70, 40)]),
    ],
)
@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_mask_area_matches_physical_area(roi, mpp):
    mask = roi.mask(mpp, (0, 0), (int(120 / mpp), int(120 / mpp)))
    assert mask.sum() * mpp * mpp == pytest.approx(roi.area_um2, rel=0.04)


def test_mask_honours_origin_and_bbox():
    roi = ROI.rectangle("r", 10.0, 20.0, 5.0, 5.0)
    y0, x0, y1, x1 = roi.bbox_px(0.5).corners
    assert (y0, x0, y1, x1) == (20, 40, 30, 50)
    mask = roi.mask(0.5, (y0, x0), (y1 - y0, x1 - x0))
    assert mask.all()
    shifted = roi.mask(0.5, (0, 0), (60, 60))
    assert shifted.sum() == 100 and shifted[20:30, 40:50].all()


def test_from_napari_pixels():
    rect = ROI.from_pixels("rectangle", [[0, 0], [0, 10], [20, 10], [20, 0]], 0.5, "a")
    assert rect.kind == "rectangle" and rect.area_um2 == pytest.approx(50.0)
    ell = ROI.from_pixels("ellipse", [[0, 0], [0, 10], [20, 10], [20, 0]], 0.5, "b")
    assert ell.kind == "ellipse" and ell.area_um2 == pytest.approx(np.pi * 5 * 2.5)
    rotated = ROI.from_pixels("rectangle", [[0, 5], [5, 10], [10, 5], [5, 0]], 1.0, "c")
    assert rotated.kind == "polygon" and rotated.area_um2 == pytest.approx(50.0)
    rot_ell = ROI.from_pixels("ellipse", [[0, 5], [5, 10], [10, 5], [5, 0]], 1.0, "d")
    assert rot_ell.area_um2 == pytest.approx(np.pi * 12.5, rel=0.01)
    with pytest.raises(ValueError, match="cannot be ROIs"):
        ROI.from_pixels("line", [[0, 0], [5, 5]], 1.0, "l")


def test_bad_rois_get_clear_errors():
    with pytest.raises(ValueError, match="degenerate"):
        ROI.rectangle("flat", 0, 0, 0, 10)
    with pytest.raises(ValueError, match="degenerate"):
        ROI.polygon("line", [(0, 0), (1, 1), (2, 2)])
    with pytest.raises(ValueError, match="needs 3 points"):
        ROI.polygon("two", [(0, 0), (1, 1)])
    with pytest.raises(ValueError, match="finite"):
        ROI.polygon("nan", [(0, 0), (1, np.nan), (2, 0)])
    far = ROI.rectangle("far away", 1000.0, 1000.0, 10.0, 10.0)
    with pytest.raises(ValueError, match="'far away'.*outside the image"):
        far.bbox_px(0.5, (100, 100))
    with pytest.raises(ValueError, match="no ROI"):
        validate_rois([], (10, 10), 0.5)
    with pytest.raises(ValueError, match="mpp"):
        ROI.whole_image((10, 10), None)


def test_partly_outside_roi_is_clipped():
    roi = ROI.rectangle("edge", -5.0, -5.0, 20.0, 20.0)
    assert roi.bbox_px(1.0, (10, 10)).corners == (0, 0, 10, 10)


def test_names_are_unique_and_filled_in():
    rois = name_rois(
        [
            ROI.rectangle("", 0, 0, 1, 1),
            ROI.rectangle("t", 0, 0, 1, 1),
            ROI.rectangle("t", 0, 0, 1, 1),
        ]
    )
    assert [r.name for r in rois] == ["ROI 1", "t", "t (2)"]


def _square_um(y, x, side):
    return [(y, x), (y, x + side), (y + side, x + side), (y + side, x)]


def test_holes_leave_the_mask_and_the_area():
    # 0.5 µm/px: a 40 µm square (80 px) with a 10 µm square hole (20 px), both on pixel edges.
    roi = ROI.polygon("holed", _square_um(0, 0, 40), [_square_um(10, 10, 10)])
    assert roi.area_um2 == pytest.approx(40 * 40 - 10 * 10)
    assert roi.outer_area_um2 == pytest.approx(40 * 40)
    mask = roi.mask(0.5, (0, 0), (100, 100))
    assert mask.sum() == 80 * 80 - 20 * 20  # by hand: pixel counts, not an approximation
    assert not mask[20:40, 20:40].any() and mask[:20, :80].all() and not mask[:, 80:].any()
    assert mask[19, 19] and not mask[20, 20] and not mask[39, 39] and mask[40, 40]
    # A window starting inside the hole sees it at its own origin.
    assert not roi.mask(0.5, (25, 25), (10, 10)).any()


def test_an_roi_and_its_hole_tile_the_plane_exactly():
    # Off-grid vertices: every pixel of the outline is in the ROI or in its hole, never both.
    outer = [(0.3, 0.7), (0.2, 41.9), (37.1, 39.6), (40.3, 1.1)]
    hole = [(9.7, 10.3), (11.1, 25.5), (27.4, 22.9)]
    roi = ROI.polygon("a", outer, [hole])
    whole = ROI.polygon("whole", outer).mask(0.5, (0, 0), (90, 90))
    inner = ROI.polygon("hole", hole).mask(0.5, (0, 0), (90, 90))
    mask = roi.mask(0.5, (0, 0), (90, 90))
    assert not (mask & inner).any()
    np.testing.assert_array_equal(mask | inner, whole)
    assert mask.sum() * 0.25 == pytest.approx(roi.area_um2, rel=0.02)


def test_holes_survive_naming_mapping_and_export():
    roi = ROI.polygon("", _square_um(0, 0, 40), [_square_um(10, 10, 10)])
    (named,) = name_rois([roi])
    assert named.name == "ROI 1" and named.holes == roi.holes
    moved = roi.map_points(lambda p: p + np.array([5.0, 7.0]))
    assert moved.area_um2 == pytest.approx(roi.area_um2)
    np.testing.assert_allclose(moved.holes_um()[0][0], [15.0, 17.0])
    assert roi.to_dict()["holes_um"][0][0] == [10.0, 10.0]
    assert "holes_um" not in ROI.rectangle("r", 0, 0, 1, 1).to_dict()


def test_bad_holes_are_refused():
    with pytest.raises(ValueError, match="inside its outline"):
        ROI.polygon("out", _square_um(0, 0, 10), [_square_um(5, 5, 10)])
    with pytest.raises(ValueError, match="inside its outline"):
        ROI.polygon("overlap", _square_um(0, 0, 40), [_square_um(5, 5, 10), _square_um(8, 8, 10)])
    with pytest.raises(ValueError, match="hole 1 needs 3"):
        ROI.polygon("short", _square_um(0, 0, 40), [[(1, 1), (2, 2)]])


def test_exclusions_become_holes_or_cut_the_outline():
    from napari_virtualstain.core.roi import exclude

    square = ROI.rectangle("tumour", 0, 0, 100, 100)
    away = ROI.rectangle("x", 200, 200, 10, 10)
    inside = ROI.rectangle("necrosis", 20, 20, 30, 30)
    edge = ROI.rectangle("fold", 90, -10, 20, 120)  # across the bottom edge
    assert exclude([square], [away]) == [square]  # untouched
    (holed,) = exclude([square], [inside])
    assert holed.area_um2 == pytest.approx(100 * 100 - 30 * 30) and len(holed.holes) == 1
    (cut,) = exclude([square], [inside, edge])
    assert cut.area_um2 == pytest.approx(100 * 90 - 30 * 30)
    mask = cut.mask(1.0, (0, 0), (100, 100))
    assert not mask[25:45, 25:45].any() and not mask[92:].any() and mask[5:15, 5:15].all()
    with pytest.raises(ValueError, match="cut ROI 'tumour' into 2 parts"):
        exclude([square], [ROI.rectangle("band", 40, -10, 10, 120)])
    with pytest.raises(ValueError, match="entirely inside"):
        exclude([square], [ROI.rectangle("all", -5, -5, 110, 110)])
