"""The QA dock widget in a real, shown napari viewer (run under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_virtualstain._qt.qa_widget import QAWidget
from tests.support import PACKAGE_DATA

DATA = PACKAGE_DATA
MPP = 0.227


@pytest.fixture
def pair():
    real = tifffile.imread(DATA / "OS-2-ndpi_Ki67.ome.tif")[:384, :384].copy()
    virtual = real.copy()
    # a "virtual stain" that misses DAB in one block and is too dark in another
    virtual[40:140, 40:140] = np.maximum(virtual[40:140, 40:140], 200)
    virtual[220:320, 220:320] = (virtual[220:320, 220:320] * 0.6).astype(np.uint8)
    return virtual, real


def _wait(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(
        lambda: widget.worker is not None and not widget.cancel_button.isEnabled(), timeout=timeout
    )


def _add(viewer, virtual, real):
    viewer.add_image(real, name="real Ki-67", rgb=True, scale=(MPP, MPP), metadata={"mpp": MPP})
    viewer.add_image(
        virtual, name="virtual Ki-67", rgb=True, scale=(MPP, MPP), metadata={"mpp": MPP}
    )


def test_residual_layers_for_the_view_render(make_napari_viewer, qtbot, pair, tmp_path):
    virtual, real = pair
    viewer = make_napari_viewer(show=True)
    _add(viewer, virtual, real)
    widget = QAWidget(viewer)
    widget.combos["virtual"].setCurrentText("virtual Ki-67")
    widget.combos["real"].setCurrentText("real Ki-67")
    viewer.reset_view()
    widget.build()
    _wait(qtbot, widget)
    names = [lay.name for lay in viewer.layers]
    for expected in (
        "rgb residual",
        "od residual",
        "dab residual",
        "hematoxylin residual",
        "local SSIM",
    ):
        assert expected in names
    dab = viewer.layers["dab residual"]
    lo, hi = dab.contrast_limits
    assert lo == pytest.approx(-hi) and hi > 0  # symmetric: white means no difference
    assert np.allclose(dab.scale, (MPP, MPP))
    text = widget.summary.toPlainText()
    assert "ssim:" in text and "psnr_db:" in text and "seconds to build dab" in text
    # the map is negative where the virtual stain lost its DAB, ~zero where it is untouched
    assert widget.last_result.box_px == (0, 0, 384, 384)  # the whole image is in view
    lost, untouched = dab.data[50:130, 50:130], dab.data[150:200, 150:200]
    assert lost.min() < -0.3 and lost.mean() < -0.02
    assert np.abs(untouched).mean() < 0.1 * np.abs(lost).mean()

    for lay in viewer.layers:
        lay.visible = lay.name == "dab residual"
    viewer.reset_view()
    shot = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)
    tifffile.imwrite(tmp_path / "dab_residual_screenshot.tif", shot.astype(np.uint8))
    blue = (shot[..., 2] > 200) & (shot[..., 0] < 120)
    white = (shot > 235).all(axis=-1)
    assert blue.sum() > 500  # the lost-DAB block renders blue
    assert white.sum() > 5 * blue.sum()  # the rest of the view is "no difference"


def test_roi_with_nuclei_gives_disagreement_counts(make_napari_viewer, qtbot, pair):
    virtual, real = pair
    viewer = make_napari_viewer(show=True)
    _add(viewer, virtual, real)
    labels = np.zeros(real.shape[:2], np.int32)
    labels[60:80, 60:80] = 1  # inside the block whose DAB the virtual stain lost
    labels[170:190, 170:190] = 2
    viewer.add_labels(labels, name="nuclei", scale=(MPP, MPP))
    roi = np.array([[10, 10], [10, 200], [200, 200], [200, 10]]) * MPP
    viewer.add_shapes([roi], shape_type="rectangle", name="ROI")
    widget = QAWidget(viewer)
    widget.combos["virtual"].setCurrentText("virtual Ki-67")
    widget.combos["real"].setCurrentText("real Ki-67")
    widget.combos["labels"].setCurrentText("nuclei")
    widget.combos["roi"].setCurrentText("ROI")
    widget.region.setCurrentIndex(1)
    for kind, box in widget.kind_boxes.items():
        box.setChecked(kind in ("rgb", "dab"))
    request = widget.build_request()
    # µm -> px rounding may widen the box by one pixel
    assert np.abs(np.subtract(request.box_px, (10, 10, 200, 200))).max() <= 1
    assert request.mask.mean() > 0.97
    widget.build()
    _wait(qtbot, widget)
    assert "DAB disagreement" in viewer.layers and "od residual" not in viewer.layers
    summary = widget.last_result.summary
    assert summary["nuclei_n_nuclei"] == 2
    assert np.isfinite(summary["psnr_db"]) and summary["ssim"] < 1.0


def test_bad_choice_is_reported_not_raised(make_napari_viewer, pair):
    virtual, real = pair
    viewer = make_napari_viewer(show=True)
    _add(viewer, virtual, real[:200])
    widget = QAWidget(viewer)
    widget.combos["virtual"].setCurrentText("virtual Ki-67")
    widget.combos["real"].setCurrentText("real Ki-67")
    assert widget.build() is None
    assert "register them first" in widget.status.text()


@pytest.mark.slow
def test_register_shows_real_slide_and_maps_rois(make_napari_viewer, qtbot):
    from scipy import ndimage as ndi

    he = tifffile.imread(DATA / "cmu-1-small-region.svs")[::4, ::4].copy()
    mpp = 4 * 0.499
    # the "real" section: the same tissue rotated by 12 degrees and shifted
    moving = np.stack(
        [ndi.rotate(he[..., c], 12, reshape=False, cval=245, order=1) for c in range(3)], -1
    )
    moving = np.roll(moving, (15, -10), axis=(0, 1))
    viewer = make_napari_viewer(show=True)
    viewer.add_image(moving, name="real", rgb=True, scale=(mpp, mpp), metadata={"mpp": mpp})
    viewer.add_image(he, name="virtual", rgb=True, scale=(mpp, mpp), metadata={"mpp": mpp})
    widget = QAWidget(viewer)
    widget.combos["virtual"].setCurrentText("virtual")
    widget.combos["real"].setCurrentText("real")
    widget.register()
    _wait(qtbot, widget, timeout=120_000)
    assert widget.registration is not None, widget.status.text()
    assert widget.registration.score > 0.5
    assert "real (registered)" in viewer.layers
    shown = viewer.layers["real (registered)"]
    reg = widget.registration
    if reg.is_affine:  # shown through the layer's affine: no resampling
        assert np.allclose(shown.affine.affine_matrix, reg.layer_affine())
    else:  # lazily warped onto the virtual slide's grid
        assert shown.data.shape == he.shape
        from napari_virtualstain.core.metrics import ssim

        warped = np.asarray(shown.data)
        assert ssim(warped[100:400, 100:400], he[100:400, 100:400]) > ssim(
            moving[100:400, 100:400], he[100:400, 100:400]
        )
    roi = np.array([[100, 100], [100, 300], [300, 300], [300, 100]], float) * mpp
    viewer.add_shapes([roi], shape_type="polygon", name="ROI")
    widget.combos["roi"].setCurrentText("ROI")
    mapped = widget.map_rois()
    assert mapped is not None and len(mapped.data) == 1
    centre_fixed = roi.mean(axis=0)
    centre_moving = mapped.data[0].mean(axis=0)
    # the mapped ROI is the fixed one rotated about the image centre: its centre moved
    assert np.linalg.norm(centre_moving - centre_fixed) > 5 * mpp


def test_registered_layer_data_affine_and_warped():
    import dask.array as da

    from napari_virtualstain._napari.residual_layers import registered_layer_data
    from napari_virtualstain.core.registration import Registration

    levels = [da.zeros((400, 300, 3), np.uint8, chunks=128), da.zeros((200, 150, 3), np.uint8)]
    tup = (levels, {"name": "real", "rgb": True, "scale": (0.5, 0.5), "multiscale": True}, "image")
    m = ((1.0, 0.0, 5.0), (0.0, -1.0, 140.0), (0.0, 0.0, 1.0))  # a flip and a shift, µm
    affine = Registration(m, 0.25, 0.5, (600, 560), (400, 300), 0.9)
    data, kwargs, _ = registered_layer_data(tup, affine)
    assert data is levels and "scale" not in kwargs
    assert np.allclose(kwargs["affine"], affine.layer_affine())
    field = np.ones((2, 4, 4), np.float32)
    warped = Registration(
        m, 0.25, 0.5, (600, 560), (400, 300), 0.9, field_spacing_um=50.0, displacement_um=field
    )
    data, kwargs, _ = registered_layer_data(
        tup, warped, [(600, 560, 3), (300, 280, 3)], [0.25, 0.5]
    )
    assert [d.shape for d in data] == [(600, 560, 3), (300, 280, 3)]
    assert kwargs["scale"] == (0.25, 0.25) and kwargs["name"] == "real (registered)"
    with pytest.raises(ValueError, match="level shapes"):
        registered_layer_data(tup, warped)


def test_whole_slide_lazy_pyramids(make_napari_viewer, qtbot, pair):
    import dask.array as da

    virtual, real = pair
    viewer = make_napari_viewer(show=True)
    pyramid = {
        name: [
            da.from_array(img, chunks=(128, 128, 3)),
            da.from_array(img[::2, ::2].copy(), chunks=(128, 128, 3)),
        ]
        for name, img in (("real", real), ("virtual", virtual))
    }
    for name, levels in pyramid.items():
        viewer.add_image(
            levels, name=name, rgb=True, multiscale=True, scale=(MPP, MPP), metadata={"mpp": MPP}
        )
    widget = QAWidget(viewer)
    widget.combos["virtual"].setCurrentText("virtual")
    widget.combos["real"].setCurrentText("real")
    widget.region.setCurrentIndex(2)
    for kind, box in widget.kind_boxes.items():
        box.setChecked(kind in ("dab", "ssim"))
    widget.build()
    _wait(qtbot, widget)
    layer = viewer.layers["dab residual"]
    assert layer.multiscale and isinstance(layer.data[0], da.Array)  # level 0 stays lazy
    full = np.asarray(layer.data[0])
    assert full.shape == real.shape[:2] and full[50:130, 50:130].min() < -0.3
    assert "local SSIM" in viewer.layers and "summary_level_mpp" in widget.summary.toPlainText()
