"""The "Virtual stain" dock widget: start, overlay appears, opacity, stop, unknown mpp."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_virtualstain._napari.layers import slide_layer_data  # noqa: E402
from napari_virtualstain._qt.stain_widget import VirtualStainWidget  # noqa: E402
from napari_virtualstain.core.io import open_slide  # noqa: E402
from napari_virtualstain.core.models import ModelCard, build_generator, save_model  # noqa: E402
from napari_virtualstain.core.samples import sample_path  # noqa: E402


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=4, init="xavier")
    card = ModelCard(name="tiny-widget", arch="resnet_6blocks", arch_kwargs={"ngf": 4},
                     direction="he->ki67", mpp=0.227, tile_px=256, receptive_field_px=117)  # fmt: skip
    return save_model(module, card, tmp_path / "tiny-widget")


@pytest.mark.slow
def test_start_adds_the_overlay_and_stop_cancels(make_napari_viewer, qtbot, model_dir, tmp_path):
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = slide_layer_data(open_slide(sample_path("he")))
    he = viewer.add_image(data, **kwargs)
    widget = VirtualStainWidget(viewer)
    assert widget.layer_combo.currentText() == he.name
    widget.model_combo.setEditText(str(model_dir))
    widget.device_combo.setCurrentText("cpu")
    widget.precision_combo.setCurrentText("fp32")  # bf16 is slow for a width-4 toy network
    widget.cache_edit.setText(str(tmp_path / "cache"))
    widget.opacity.setValue(60)
    viewer.reset_view()
    widget.start()
    qtbot.waitUntil(lambda: widget.overlay is not None, timeout=60_000)
    overlay = widget.overlay
    qtbot.waitUntil(lambda: overlay.tiles_done > 0 and overlay.worker is None, timeout=120_000)
    assert overlay.layer.name == "virtual ki67 (tiny-widget)"
    assert overlay.layer.opacity == pytest.approx(0.6)
    assert widget.direction.text() == "he->ki67"
    assert "matches" in widget.status.text()
    widget.opacity.setValue(30)
    assert overlay.layer.opacity == pytest.approx(0.3)
    assert any((tmp_path / "cache").rglob("*.json"))  # tiles reached the shared disk cache
    assert np.asarray(overlay.buffers[0])[..., 3].max() == 255
    widget.stop()
    assert widget.overlay is None and widget.start_button.isEnabled()
    assert overlay.layer in viewer.layers  # what was computed stays


def test_unknown_mpp_asks_for_it(make_napari_viewer, model_dir):
    viewer = make_napari_viewer(show=True)
    rgb = np.full((64, 64, 3), 200, np.uint8)
    viewer.add_image(rgb, rgb=True, name="no-mpp")
    widget = VirtualStainWidget(viewer)
    widget.model_combo.setEditText(str(model_dir))
    assert widget.start() is None
    assert "no pixel size" in widget.status.text()
    assert widget.overlay is None and len(viewer.layers) == 1
