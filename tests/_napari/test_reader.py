"""The reader contribution in a real, shown napari window (run under Xvfb)."""

import numpy as np
import pytest

from napari_virtualstain._napari.reader import get_reader


def test_reader_declines_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path)) is None  # a folder that is not zarr


def test_reader_gives_multiscale_layer_with_physical_scale(ome_pyramid):
    layers = get_reader(str(ome_pyramid))(str(ome_pyramid))
    data, kwargs, kind = layers[0]
    assert kind == "image" and kwargs["rgb"] and kwargs["multiscale"]
    assert kwargs["scale"] == (0.25, 0.25)
    assert [d.shape[:2] for d in data] == [(600, 800), (300, 400), (150, 200)]


def shown_pixels(screenshot: np.ndarray) -> np.ndarray:
    """The canvas pixels covered by the image (the canvas background is black)."""
    rgb = screenshot[..., :3].astype(int)
    return rgb[rgb.max(-1) > 40]


def tissue_fraction(pixels: np.ndarray) -> float:
    """Fraction of pixels that look stained: saturated, not white."""
    saturation = pixels.max(-1) - pixels.min(-1)
    return float((saturation > 25).mean())


@pytest.mark.parametrize("key", ["he", "ki67", "cmu1"])
def test_sample_opens_in_viewer_at_physical_scale(make_napari_viewer, sample_paths, key):
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(sample_paths[key]), plugin="napari-virtualstain")
    layer = layers[0]
    mpp = {"he": 0.227, "ki67": 0.227, "cmu1": 0.499}[key]
    assert layer.scale[-1] == pytest.approx(mpp, abs=1e-3)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    shown = shown_pixels(shot)
    assert len(shown) > 0.3 * shot.shape[0] * shot.shape[1], "the image fills little of the canvas"
    assert tissue_fraction(shown) > 0.15, "the canvas does not show stained tissue"
    # The colours on screen are the slide's colours (the right image, not a blank or a wrong level).
    lowest = layer.data[-1] if layer.multiscale else layer.data
    expected_mean = np.asarray(lowest).reshape(-1, 3).mean(0)
    np.testing.assert_allclose(shown.mean(0), expected_mean, atol=20)
    # World extent is physical: width in µm = pixels * mpp.
    extent_um = layer.extent.world[1][-1] - layer.extent.world[0][-1]
    assert extent_um == pytest.approx(layer.level_shapes[0][1] * mpp, rel=0.01)


def test_sample_data_contribution(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-virtualstain", "ki67")
    assert viewer.layers[0].name == "OS-2-ndpi_Ki67"
    assert viewer.layers[0].rgb
