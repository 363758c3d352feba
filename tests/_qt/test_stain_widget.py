"""The "Virtual stain" dock widget: direction before a run, start / stop / start again on the
same layer, precision and its reason shown, the whole-slide run, Save to OME-Zarr, unknown mpp."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from tests.support.docks import plugin_dock
from tests.support.models import write_tiny_generator

torch = pytest.importorskip("torch")

from napari_virtualstain._napari.layers import slide_layer_data  # noqa: E402
from napari_virtualstain.core.io import open_slide  # noqa: E402
from napari_virtualstain.core.samples import sample_path  # noqa: E402


@pytest.fixture
def model_dir(tmp_path, request):
    # A model of its own per test: the in-process tile cache is keyed by the weights, and a
    # test that expects work to do must not find another test's tiles there.
    seed = zlib.crc32(request.node.name.encode()) % 10_000
    return write_tiny_generator(
        tmp_path, "tiny-widget", seed=seed, mpp=0.227, tile_px=256, direction="he->ki67"
    )


def open_widget(viewer, model_dir, tmp_path):
    data, kwargs, _ = slide_layer_data(open_slide(sample_path("he")))
    he = viewer.add_image(data, **kwargs)
    widget = plugin_dock(viewer, "Virtual stain")
    assert widget.layer_combo.currentText() == he.name
    widget.model_combo.setEditText(str(model_dir))
    widget.device_combo.setCurrentText("cpu")
    widget.precision_combo.setCurrentText("fp32")
    widget.cache_edit.setText(str(tmp_path / "cache"))
    return he, widget


@pytest.mark.slow
def test_start_stop_start_reuses_the_overlay(make_napari_viewer, qtbot, model_dir, tmp_path):
    viewer = make_napari_viewer(show=True)
    he, widget = open_widget(viewer, model_dir, tmp_path)
    assert widget.direction.text().startswith("he->ki67")  # known before any run
    widget.opacity.setValue(50)
    viewer.reset_view()
    widget.start()
    qtbot.waitUntil(lambda: widget.overlay is not None, timeout=60_000)
    overlay = widget.overlay
    qtbot.waitUntil(lambda: overlay.tiles_done > 0 and overlay.worker is None, timeout=120_000)
    assert overlay.layer.name == "virtual ki67 (tiny-widget)"
    assert overlay.layer.opacity == pytest.approx(0.5)
    assert (
        "fp32" in widget.precision_note.text() and "set by the user" in widget.precision_note.text()
    )
    assert "halo" in widget.precision_note.text()  # measured, or the exact one, and why
    assert "view complete" in widget.status.text()
    widget.opacity.setValue(30)
    assert overlay.layer.opacity == pytest.approx(0.3)
    overlay.layer.opacity = 0.8  # set in napari's layer controls: the slider follows
    assert widget.opacity.value() == 80
    assert any((tmp_path / "cache").rglob("*.json"))  # tiles reached the shared disk cache
    assert np.asarray(overlay.buffers.levels[0])[..., 3].max() == 255
    widget.stop()
    assert not overlay.following and widget.start_button.isEnabled()
    assert overlay.layer in viewer.layers  # what was computed stays
    widget.start()  # same settings: the same overlay follows the camera again
    assert widget.overlay is overlay and overlay.following
    widget.stop()
    widget.precision_combo.setCurrentText("bf16")  # new settings: new stain, same layer
    widget.start()
    qtbot.waitUntil(lambda: widget.overlay is not None and widget.overlay is not overlay,
                    timeout=60_000)  # fmt: skip
    qtbot.waitUntil(lambda: widget.overlay.worker is None, timeout=120_000)
    names = [layer.name for layer in viewer.layers]
    assert names.count("virtual ki67 (tiny-widget)") == 1 and not any("[1]" in n for n in names)
    assert widget.overlay.layer is overlay.layer
    assert widget.overlay.vs.engine.precision == "bf16"
    widget.stop()


@pytest.mark.slow
def test_int8_is_offered_and_its_measured_cost_is_shown(
    make_napari_viewer, qtbot, model_dir, tmp_path
):
    viewer = make_napari_viewer(show=True)
    he, widget = open_widget(viewer, model_dir, tmp_path)
    widget.precision_combo.setCurrentText("int8")
    assert widget.precision_combo.currentText() == "int8"
    viewer.reset_view()
    widget.start()
    qtbot.waitUntil(lambda: widget.overlay is not None, timeout=60_000)
    qtbot.waitUntil(lambda: widget.overlay.worker is None, timeout=120_000)
    note = widget.precision_note.text()
    assert note.startswith("int8") and "SSIM" in note and "vs fp32" in note
    assert widget.overlay.layer.metadata["virtualstain"]["int8"]["ssim_vs_fp32"] > 0
    widget.stop()


@pytest.mark.slow
def test_whole_slide_run_and_save(make_napari_viewer, qtbot, model_dir, tmp_path):
    from napari_virtualstain.core.engine.distributed import is_complete_output

    viewer = make_napari_viewer(show=True)
    he, widget = open_widget(viewer, model_dir, tmp_path)
    widget.budget_spin.setValue(1)  # zoomed out, the view alone computes nothing
    viewer.reset_view()
    widget.start()
    qtbot.waitUntil(lambda: widget.overlay is not None and widget.overlay.worker is None,
                    timeout=120_000)  # fmt: skip
    overlay = widget.overlay
    assert "Whole slide in background" in widget.status.text()
    widget.whole_slide()
    qtbot.waitUntil(lambda: "whole slide done" in widget.job_status.text(), timeout=240_000)
    small = overlay.buffers.small_levels()[0]
    assert {
        t for t in overlay.vs.grid.tiles() if overlay.vs.is_tissue(*t)
    } <= overlay.buffers.written[small]
    out = tmp_path / "virtual.zarr"
    widget.save(str(out))
    qtbot.waitUntil(lambda: "saved" in widget.job_status.text(), timeout=240_000)
    assert is_complete_output(out)
    # the saved pixels are the tiles the overlay showed (the same cache and settings)
    saved = open_slide(out)
    shown = np.asarray(overlay.buffers.levels[0][:256, :256, :3])
    np.testing.assert_array_equal(np.asarray(saved.levels[0][:256, :256]), shown)
    widget.stop()


def test_unknown_mpp_asks_for_it(make_napari_viewer, model_dir):
    viewer = make_napari_viewer(show=True)
    rgb = np.full((64, 64, 3), 200, np.uint8)
    viewer.add_image(rgb, rgb=True, name="no-mpp")
    widget = plugin_dock(viewer, "Virtual stain")
    widget.model_combo.setEditText(str(model_dir))
    assert widget.start() is None
    assert "no pixel size" in widget.status.text()
    assert widget.overlay is None and len(viewer.layers) == 1


@pytest.mark.slow
def test_a_slide_of_the_wrong_stain_is_refused_unless_forced(
    make_napari_viewer, qtbot, model_dir, tmp_path
):
    viewer = make_napari_viewer(show=False)
    data, kwargs, _ = slide_layer_data(open_slide(sample_path("ki67")))
    ki67 = viewer.add_image(data, **kwargs)
    widget = plugin_dock(viewer, "Virtual stain")  # its model is H&E -> Ki-67
    widget.layer_combo.setCurrentText(ki67.name)
    widget.model_combo.setEditText(str(model_dir))
    widget.precision_combo.setCurrentText("fp32")
    widget.cache_edit.setText(str(tmp_path / "cache"))
    widget.start()
    qtbot.waitUntil(lambda: "could not start" in widget.status.text(), timeout=60_000)
    assert "hematoxylin + DAB" in widget.status.text() and "stain anyway" in widget.status.text()
    assert widget.overlay is None and len(viewer.layers) == 1 and widget.start_button.isEnabled()
    widget.force_check.setChecked(True)
    widget.start()
    qtbot.waitUntil(lambda: widget.overlay is not None, timeout=60_000)
    verdict = widget.overlay.layer.metadata["virtualstain"]["source_stain_check"]
    assert verdict["forced"] and not verdict["ok"] and verdict["looks_like"] == "hdab"
    widget.stop()
    # Save runs the same check, and the forced verdict goes into the output's provenance
    # (where `ratio` reads it and gives no grade)
    from napari_virtualstain.core.ki67.virtual_input import read_provenance

    widget.save(str(tmp_path / "forced.zarr"))
    qtbot.waitUntil(lambda: "saved" in widget.job_status.text(), timeout=240_000)
    provenance = read_provenance(tmp_path / "forced.zarr")
    assert (
        provenance["source_stain_check"]["forced"] and "--force" in provenance["source_stain_note"]
    )
