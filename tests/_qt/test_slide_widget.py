import numpy as np

from tests.support.docks import plugin_dock


def test_open_shows_metadata_and_adds_layer(make_napari_viewer, sample_paths):
    viewer = make_napari_viewer(show=True)
    widget = plugin_dock(viewer, "Slide")
    widget.path_edit.setText(str(sample_paths["cmu1"]))
    slide = widget.open_path()
    assert slide is not None
    text = widget.info.toPlainText()
    assert "0.4990 µm/px" in text and "20x" in text and "macro" in text
    layer = widget.add_to_viewer()
    assert layer.scale[-1] == 0.499
    assert widget.associated.count() == 3
    widget.associated.setCurrentText("label")
    label_layer = widget.show_associated()
    assert label_layer.data.shape == (463, 387, 3)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert np.asarray(shot)[..., :3].std() > 10


def test_bad_path_shows_error_and_adds_nothing(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    widget = plugin_dock(viewer, "Slide")
    widget.path_edit.setText(str(tmp_path / "missing.ndpi"))
    assert widget.open_path() is None
    assert "missing.ndpi" in widget.status.text()
    assert not widget.add_button.isEnabled()
    assert widget.add_to_viewer() is None
    assert len(viewer.layers) == 0
