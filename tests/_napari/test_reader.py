"""The reader contribution in a real, shown napari window (run under Xvfb)."""

import numpy as np
import pytest

from napari_virtualstain._napari.layers import layer_mpp
from napari_virtualstain._napari.reader import get_reader


def test_reader_declines_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path)) is None  # a folder that is not zarr


def test_reader_declines_tiffs_that_are_not_slides(tmp_path):
    """napari then offers them to its own TIFF reader instead of showing our error."""
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 64, 64), np.uint16), imagej=True)
    tifffile.imwrite(tmp_path / "channels.tif", np.zeros((7, 64, 64), np.float32))
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    for name in ("stack.tif", "channels.tif", "broken.tif"):
        assert get_reader(str(tmp_path / name)) is None, name


def test_reader_opens_png_and_jpeg(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "tile.png")
    Image.fromarray(rgb).save(tmp_path / "tile.jpg", quality=95)
    for name in ("tile.png", "tile.jpg"):
        ((data, kwargs, kind),) = get_reader(str(tmp_path / name))(str(tmp_path / name))
        assert kind == "image" and np.asarray(data).shape == (40, 60, 3)
        assert kwargs["units"] == ("pixel", "pixel")  # a raster tile states no pixel size
    ((data, _, _),) = get_reader(str(tmp_path / "tile.png"))(str(tmp_path / "tile.png"))
    np.testing.assert_array_equal(np.asarray(data), rgb)


def test_reader_gives_multiscale_layer_with_physical_scale(ome_pyramid):
    layers = get_reader(str(ome_pyramid))(str(ome_pyramid))
    data, kwargs, kind = layers[0]
    assert kind == "image" and kwargs["rgb"] and kwargs["multiscale"]
    assert kwargs["scale"] == (0.25, 0.25)
    assert kwargs["units"] == ("micrometer", "micrometer")
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


def test_layer_mpp_from_units_and_scale_of_any_reader():
    """mpp comes from physical units and scale (as napari-ome-zarr and others set them)."""
    from napari.layers import Image

    img = np.zeros((8, 8), np.uint8)
    assert layer_mpp(Image(img, scale=(0.5, 0.5), units=("micrometer",) * 2)) == 0.5
    assert layer_mpp(Image(img, scale=(2e-4, 2e-4), units=("mm", "mm"))) == pytest.approx(0.2)
    assert layer_mpp(Image(img, scale=(250, 250), units=("nm", "nm"))) == pytest.approx(0.25)
    # Pixel units: a scale is not a pixel size; our own layers keep mpp in their metadata.
    assert layer_mpp(Image(img, scale=(2, 2))) is None
    assert layer_mpp(Image(img, scale=(2, 2), metadata={"mpp": 0.25})) == 0.25
    assert layer_mpp(Image(img, scale=(2, 2), units=("s", "s"))) is None


def test_opened_layer_carries_units(make_napari_viewer, ome_pyramid):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(ome_pyramid), plugin="napari-virtualstain")
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert layer_mpp(layer) == pytest.approx(0.25)


def test_openslide_formats_without_openslide_decline_with_a_reason(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openslide", None)  # as if the extra were not installed
    path = tmp_path / "scan.mrxs"
    path.write_bytes(b"x")
    with pytest.warns(UserWarning, match=r"napari-virtualstain\[openslide\]"):
        assert get_reader(str(path)) is None
