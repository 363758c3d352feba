"""The QA dock widget in a real, shown napari viewer (run under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_virtualstain.core.registration.frames import LayerFrame
from tests.support import PACKAGE_DATA
from tests.support.docks import plugin_dock

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
    qtbot.waitUntil(lambda: not widget.pending_layers, timeout=10_000)  # added one per turn


def _add(viewer, virtual, real, multiscale=False):
    for name, img in (("real Ki-67", real), ("virtual Ki-67", virtual)):
        data = [img, img[::2, ::2].copy()] if multiscale else img
        viewer.add_image(
            data, name=name, rgb=True, multiscale=multiscale, scale=(MPP, MPP),
            metadata={"mpp": MPP},
        )  # fmt: skip


@pytest.mark.parametrize("multiscale", [False, True])
def test_residual_layers_for_the_view_render(make_napari_viewer, qtbot, pair, tmp_path, multiscale):
    virtual, real = pair
    viewer = make_napari_viewer(show=True)
    _add(viewer, virtual, real, multiscale)
    widget = plugin_dock(viewer, "QA")
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
    assert np.allclose(dab.scale, (MPP, MPP)) and np.allclose(dab.translate, (0, 0))
    # the dock shows the selected map's legend: a colour bar with its units
    viewer.layers.selection.active = dab
    assert not widget.legend.isHidden()
    assert "DAB optical density" in widget.legend.title.text()
    assert widget.legend.ticks[0].text() == f"{lo:+.3g}" and widget.legend.bar.colors
    text = widget.summary.toPlainText()
    assert "SSIM (1 = identical): " in text and " dB" in text and "(built in " in text
    assert "mean |DAB residual|: " in text and text.count(" OD\n") >= 2  # named, with units
    qtbot.waitUntil(lambda: widget.status.text().startswith("built"), timeout=10_000)
    assert "built 5 layers for a 384 x 384 px region" in widget.status.text()
    # the map is negative where the virtual stain lost its DAB, ~zero where it is untouched
    assert widget.last_result.box.corners == (0, 0, 384, 384)  # the whole image is in view
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


@pytest.mark.parametrize("multiscale", [False, True])
def test_roi_with_nuclei_gives_disagreement_counts(make_napari_viewer, qtbot, pair, multiscale):
    virtual, real = pair
    viewer = make_napari_viewer(show=True)
    _add(viewer, virtual, real, multiscale)
    labels = np.zeros(real.shape[:2], np.int32)
    labels[60:80, 60:80] = 1  # inside the block whose DAB the virtual stain lost
    labels[170:190, 170:190] = 2
    viewer.add_labels(labels, name="nuclei", scale=(MPP, MPP))
    roi = np.array([[10, 10], [10, 200], [200, 200], [200, 10]]) * MPP
    viewer.add_shapes([roi], shape_type="rectangle", name="ROI")
    widget = plugin_dock(viewer, "QA")
    widget.combos["virtual"].setCurrentText("virtual Ki-67")
    widget.combos["real"].setCurrentText("real Ki-67")
    widget.combos["labels"].setCurrentText("nuclei")
    widget.combos["roi"].setCurrentText("ROI")
    widget.region.setCurrentIndex(1)
    for kind, box in widget.kind_boxes.items():
        box.setChecked(kind in ("rgb", "dab"))
    level, box, mask = widget.region_of_choice()
    # µm -> px rounding may widen the box by one pixel
    assert level == 0 and np.abs(np.subtract(box.corners, (10, 10, 200, 200))).max() <= 1
    assert mask.mean() > 0.97
    widget.build()
    _wait(qtbot, widget)
    assert "DAB disagreement" in viewer.layers and "od residual" not in viewer.layers
    summary = widget.last_result.summary
    assert summary["nuclei_n_nuclei"] == 2
    assert np.isfinite(summary["psnr_db"]) and summary["ssim"] < 1.0


def test_bad_choice_is_reported_and_clears_stale_numbers(make_napari_viewer, qtbot, pair):
    from napari.utils import progress

    virtual, real = pair
    viewer = make_napari_viewer(show=True)
    _add(viewer, virtual, real)
    viewer.add_image(real[:200], name="short real", rgb=True, scale=(MPP, MPP))
    widget = plugin_dock(viewer, "QA")
    widget.combos["virtual"].setCurrentText("virtual Ki-67")
    widget.combos["real"].setCurrentText("real Ki-67")
    for kind, box in widget.kind_boxes.items():
        box.setChecked(kind == "rgb")
    viewer.reset_view()
    widget.build()
    _wait(qtbot, widget)
    assert "mean absolute error:" in widget.summary.toPlainText() and widget.last_result is not None
    # a real stain that does not cover the view: a clear message, and no stale numbers
    from napari.utils.notifications import notification_manager

    n_notes = len(notification_manager.records)
    widget.combos["real"].setCurrentText("short real")
    widget.build()
    _wait(qtbot, widget)
    assert "register them first" in widget.status.text()
    assert len(notification_manager.records) == n_notes  # bad input: no traceback pop-up
    assert widget.summary.toPlainText() == "" and widget.last_result is None
    assert widget.legend.isHidden()
    assert widget.runner._pbar is None and not list(progress._all_instances)
    assert widget.build_button.isEnabled() and not widget.cancel_button.isEnabled()
    # the same layer twice is refused before any work starts
    widget.combos["real"].setCurrentText("virtual Ki-67")
    assert widget.build() is None and "two different layers" in widget.status.text()


def _overlay(rgb, multiscale):
    """The plugin's own overlay: RGBA (alpha 0 = not computed yet), provenance, no "mpp"."""
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[: rgb.shape[0] // 6, :, 3] = 0  # a band of tiles not computed yet
    rgba[: rgb.shape[0] // 6, :, :3] = 0
    return [rgba, rgba[::2, ::2].copy()] if multiscale else rgba


def test_cancel_leaves_no_layers_and_no_numbers(make_napari_viewer, qtbot, pair):
    virtual, real = pair
    viewer = make_napari_viewer(show=True)
    _add(viewer, virtual, real)
    widget = plugin_dock(viewer, "QA")
    widget.combos["virtual"].setCurrentText("virtual Ki-67")
    widget.combos["real"].setCurrentText("real Ki-67")
    widget.summary.setPlainText("mae: 1.0")  # numbers of an earlier run
    n_layers = len(viewer.layers)
    widget.build()
    assert widget.runner.running and widget.cancel_button.isEnabled()
    widget.cancel_button.click()  # before the worker's first step: it stops there
    _wait(qtbot, widget)
    qtbot.waitUntil(lambda: widget.status.text() == "cancelled", timeout=10_000)
    assert widget.last_result is None and widget.summary.toPlainText() == ""
    assert len(viewer.layers) == n_layers and widget.build_button.isEnabled()


@pytest.mark.slow
@pytest.mark.parametrize("multiscale", [False, True])
def test_register_on_the_overlay_shows_real_slide_and_maps_rois(
    make_napari_viewer, qtbot, multiscale
):
    from dataclasses import replace

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
    viewer.add_image(
        _overlay(he, multiscale), name="virtual", rgb=True, multiscale=multiscale,
        scale=(mpp, mpp), metadata={"virtualstain": {"model": "demo"}, "source_layer": "H&E"},
    )  # fmt: skip
    widget = plugin_dock(viewer, "QA")
    widget.combos["virtual"].setCurrentText("virtual")
    widget.combos["real"].setCurrentText("real")
    widget.register()
    _wait(qtbot, widget, timeout=120_000)
    assert widget.registration is not None, widget.status.text()
    assert widget.registration.score > 0.5
    assert "real (registered)" in viewer.layers
    # both ways of showing the real slide, whichever one the registration needed
    reg = widget.registration
    field = np.zeros((2, 4, 4), np.float32)
    affine = replace(reg, field_spacing_um=None, displacement_um=None)
    nonrigid = replace(reg, field_spacing_um=200.0, displacement_um=field)
    widget.registration = affine
    shown = widget.show_registered()  # through the layer's affine: no resampling
    assert np.allclose(shown.affine.affine_matrix, affine.layer_affine())
    widget.registration = nonrigid
    shown = widget.show_registered()  # lazily warped onto the virtual slide's grid
    level0 = np.asarray(shown.data[0] if shown.multiscale else shown.data)
    assert level0.shape == he.shape
    from napari_virtualstain.core.metrics import ssim

    # the zero field is the affine: the warped real slide now lies on the virtual one
    assert (
        ssim(level0[100:400, 100:400], he[100:400, 100:400])
        > ssim(moving[100:400, 100:400], he[100:400, 100:400]) + 0.2
    )
    widget.registration = reg
    roi = np.array([[100, 100], [100, 300], [300, 300], [300, 100]], float) * mpp
    viewer.add_shapes([roi], shape_type="polygon", name="ROI")
    widget.combos["roi"].setCurrentText("ROI")
    mapped = widget.map_rois()
    assert mapped is not None and len(mapped.data) == 1
    # the mapped ROI is where the registration sends the fixed one (world = µm for both)
    expected = reg.fixed_to_moving_um(roi)
    assert np.abs(mapped.data[0] - expected).max() < 0.5 * mpp
    assert np.linalg.norm(expected.mean(axis=0) - roi.mean(axis=0)) > 5 * mpp


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
    fixed = LayerFrame(((600, 560), (300, 280)), mpp=0.25, scale=(0.25, 0.25))
    data, kwargs, _ = registered_layer_data(tup, warped, fixed)
    assert [d.shape for d in data] == [(600, 560, 3), (300, 280, 3)]
    assert kwargs["scale"] == (0.25, 0.25) and kwargs["name"] == "real (registered)"
    with pytest.raises(ValueError, match="frame"):
        registered_layer_data(tup, warped)
    # a fixed slide shown shifted in a world of 2 µm units: the affine lands there too
    shifted = LayerFrame(((600, 560),), mpp=0.25, scale=(0.125, 0.125), translate=(7.0, -3.0))
    _, kwargs, _ = registered_layer_data(tup, affine, shifted)
    corner_um = affine.moving_to_fixed_um(np.array([[0.0, 0.0]]))[0]
    world = kwargs["affine"] @ np.array([0.0, 0.0, 1.0])
    assert np.allclose(world[:2], shifted.px_to_world(corner_um / 0.25))


@pytest.mark.parametrize("multiscale", [False, True])
def test_whole_slide_pyramids_of_the_overlay(make_napari_viewer, qtbot, pair, multiscale):
    import dask.array as da

    virtual, real = pair
    viewer = make_napari_viewer(show=True)
    levels = [da.from_array(real, chunks=(128, 128, 3))]
    if multiscale:
        levels.append(da.from_array(real[::2, ::2].copy(), chunks=(128, 128, 3)))
    viewer.add_image(
        levels if multiscale else levels[0], name="real", rgb=True, multiscale=multiscale,
        scale=(MPP, MPP), metadata={"mpp": MPP},
    )  # fmt: skip
    viewer.add_image(
        _overlay(virtual, multiscale), name="virtual", rgb=True, multiscale=multiscale,
        scale=(MPP, MPP), metadata={"virtualstain": {"model": "demo"}},
    )  # fmt: skip
    widget = plugin_dock(viewer, "QA")
    widget.combos["virtual"].setCurrentText("virtual")
    widget.combos["real"].setCurrentText("real")
    widget.region.setCurrentIndex(2)
    for kind, box in widget.kind_boxes.items():
        box.setChecked(kind in ("dab", "ssim"))
    widget.build()
    _wait(qtbot, widget)
    assert widget.last_result is not None, widget.status.text()
    layer = viewer.layers["dab residual"]
    assert layer.multiscale == multiscale
    # a small pyramid is computed in the worker: nothing is left for the GUI thread to compute
    full = layer.data[0] if multiscale else layer.data
    assert isinstance(full, np.ndarray) and full.shape == real.shape[:2]
    assert np.isnan(full[:60]).all()  # the overlay's band not computed yet stays missing
    assert full[64:130, 50:130].min() < -0.3  # the virtual stain's lost DAB
    text = widget.summary.toPlainText()
    assert "local SSIM" in viewer.layers and "summary computed at" in text
    assert "virtual stain not computed yet: 16." in text


@pytest.mark.slow
@pytest.mark.parametrize("multiscale", [False, True])
def test_cycle_error_with_the_demo_models(make_napari_viewer, qtbot, monkeypatch, multiscale):
    """Once "list index out of range": a multi-scale overlay over a one-level source."""
    # a small region budget makes the view use the overlay's level 1, which the source lacks
    monkeypatch.setattr("napari_virtualstain._qt.qa_widget.MAX_SIDE_PX", 200)
    from napari_virtualstain.core.models import load_model
    from napari_virtualstain.core.residual import reconstruct, residual_map

    he = tifffile.imread(DATA / "OS-1-detail_HE.ome.tif")[:256, :256].copy()
    ki67 = tifffile.imread(DATA / "OS-2-ndpi_Ki67.ome.tif")[:256, :256].copy()
    viewer = make_napari_viewer(show=True)
    viewer.add_image(he, name="H&E", rgb=True, scale=(MPP, MPP), metadata={"mpp": MPP})
    viewer.add_image(ki67, name="real Ki-67", rgb=True, scale=(MPP, MPP), metadata={"mpp": MPP})
    viewer.add_image(
        _overlay(ki67, multiscale), name="virtual Ki-67", rgb=True, multiscale=multiscale,
        scale=(MPP, MPP), metadata={"virtualstain": {"model": "demo-he2ki67"}},
    )  # fmt: skip
    widget = plugin_dock(viewer, "QA")
    for key, name in (("virtual", "virtual Ki-67"), ("real", "real Ki-67"), ("source", "H&E")):
        widget.combos[key].setCurrentText(name)
    models = DATA / "models"
    widget.forward_edit.setText(str(models / "demo-he2ki67"))
    widget.backward_edit.setText(str(models / "demo-ki672he"))
    for kind, box in widget.kind_boxes.items():
        box.setChecked(kind == "rgb")
    viewer.reset_view()
    widget.build()
    _wait(qtbot, widget, timeout=240_000)
    assert widget.last_result is not None, widget.status.text()
    cycle = viewer.layers["cycle error (source - reconstruction)"]
    box = widget.last_result.box
    assert box.corners == ((0, 0, 128, 128) if multiscale else (0, 0, 256, 256))
    assert cycle.data.shape == box.shape
    assert np.isfinite(cycle.data).all() and np.abs(cycle.data).mean() < 0.5
    assert "cycle local SSIM" in viewer.layers
    if multiscale:  # level 1: pixels twice the size, centred on level-0 pixel pairs
        assert np.allclose(cycle.scale, (2 * MPP, 2 * MPP))
        assert np.allclose(cycle.translate, (0.5 * MPP, 0.5 * MPP))
    else:  # the same grid: the map is exactly the cycle error of the source region
        fwd, back = (load_model(models / n, device="cpu") for n in ("demo-he2ki67", "demo-ki672he"))
        src = he[box.slices]
        rec = reconstruct(src, fwd, back, mpp=MPP)
        np.testing.assert_allclose(cycle.data, residual_map("rgb", src, rec), atol=1e-6)
        from napari_virtualstain.core.metrics import ssim

        assert widget.last_result.summary["cycle_ssim"] == pytest.approx(ssim(src, rec))
        assert "cycle reconstruction SSIM:" in widget.summary.toPlainText()


def test_the_pair_defaults_to_a_virtual_stain_and_its_declared_real(make_napari_viewer, pair):
    virtual, real = pair
    viewer = make_napari_viewer(show=False)
    viewer.add_image(real, name="he", rgb=True)  # another real image, listed first
    viewer.add_image(real, name="real Ki-67", rgb=True, metadata={"registered_to": "overlay"})
    widget = plugin_dock(viewer, "QA")
    assert widget.combos["virtual"].currentText() == widget.combos["real"].currentText()
    viewer.add_image(virtual, name="overlay", rgb=True, metadata={"virtualstain": {"model": {}}})
    # never a layer against itself by default (it gave SSIM 1, PSNR inf in one click)
    assert widget.combos["virtual"].currentText() == "overlay"
    assert widget.combos["real"].currentText() == "real Ki-67"


def test_a_virtual_he_against_a_real_ki67_is_refused(make_napari_viewer, qtbot):
    from napari_virtualstain.core.samples import sample_path

    he = tifffile.imread(sample_path("he"))[:512, :512]
    ki67 = tifffile.imread(sample_path("ki67"))[:512, :512]
    viewer = make_napari_viewer(show=False)
    viewer.add_image(ki67, name="real Ki-67", rgb=True, metadata={"mpp": MPP})
    meta = {"mpp": MPP, "virtualstain": {"model": {"direction": "ki67->he"}}}
    viewer.add_image(he, name="virtual H&E", rgb=True, metadata=meta)
    widget = plugin_dock(viewer, "QA")
    assert widget.combos["virtual"].currentText() == "virtual H&E"
    viewer.reset_view()
    widget.build()
    qtbot.waitUntil(lambda: "looks like" in widget.status.text(), timeout=30_000)
    assert "virtual stain is he" in widget.status.text() and widget.last_result is None
    assert [lay.name for lay in viewer.layers] == ["real Ki-67", "virtual H&E"]
