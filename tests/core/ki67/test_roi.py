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
