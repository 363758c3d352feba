import hashlib

import dask.array as da
import numpy as np
import pytest

from napari_virtualstain.core.io import SlideReadError, open_slide


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("key", "shape", "mpp", "fmt"),
    [
        ("he", (1101, 1101), 0.227, "ome-tiff"),
        ("ki67", (2202, 2202), 0.227, "ome-tiff"),
        ("cmu1", (2967, 2220), 0.499, "svs"),
    ],
)
def test_bundled_samples_open_with_physical_size(sample_paths, key, shape, mpp, fmt):
    slide = open_slide(sample_paths[key])
    assert slide.shape == shape
    assert slide.format == fmt
    assert slide.mpp == pytest.approx(mpp, abs=5e-4)
    level0 = slide.levels[0]
    assert isinstance(level0, da.Array)
    assert level0.dtype == np.uint8 and level0.shape[-1] == 3


def test_svs_associated_images_and_magnification(sample_paths):
    slide = open_slide(sample_paths["cmu1"])
    assert slide.magnification == 20
    assert set(slide.associated) == {"label", "macro", "thumbnail"}
    assert slide.associated["macro"].shape == (431, 1280, 3)


def test_tcga_svs_without_mpp_reports_unknown(shared_data):
    slide = open_slide(shared_data / "he" / "tcga-cr-7395-01a-01-ts1.svs")
    assert slide.mpp is None
    assert slide.level_mpp(1) is None
    assert slide.levels[1].shape[:2] == (1783, 2221)  # the file's own second level
    assert slide.built_levels == len(slide.levels) - 2  # 4443 px wide: coarser levels are built
    assert slide.summary()["mpp_known"] is False


def test_pyramidal_ome_tiff_levels_and_chunks(ome_pyramid, rgb_small):
    slide = open_slide(ome_pyramid)
    assert [lv.shape[:2] for lv in slide.levels] == [(600, 800), (300, 400), (150, 200)]
    assert slide.levels[0].chunksize[:2] == (128, 128)
    assert slide.mpp == pytest.approx(0.25)
    assert slide.level_mpp(2) == pytest.approx(1.0)
    np.testing.assert_array_equal(
        slide.levels[0][100:140, 200:260].compute(), rgb_small[100:140, 200:260]
    )
    assert slide.best_level_for_mpp(0.5) == 1


def test_single_level_svs_gets_lazy_levels(svs_like):
    slide = open_slide(svs_like)
    assert slide.format == "svs" and slide.mpp == 0.5 and slide.magnification == 20
    assert slide.built_levels >= 2
    assert max(slide.levels[-1].shape[:2]) <= 1024
    # A built level is the 2x2 mean of the one above it.
    region = slide.levels[0][:64, :64].compute().astype(float)
    expected = region.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)).round()
    np.testing.assert_allclose(slide.levels[1][:32, :32].compute(), expected, atol=1)


def test_read_region_pads_with_white(ome_pyramid):
    slide = open_slide(ome_pyramid)
    region = slide.read_region(0, -5, -5, 10, 10)
    assert region.shape == (10, 10, 3)
    assert (region[:5] == 255).all() and (region[:, :5] == 255).all()


def test_reading_never_modifies_the_input(ome_pyramid, svs_like):
    before = {p: sha256(p) for p in (ome_pyramid, svs_like)}
    for p in before:
        slide = open_slide(p)
        slide.levels[-1].compute()
        slide.read_region(0, 0, 0, 64, 64)
    assert before == {p: sha256(p) for p in before}


def test_missing_path_is_named(tmp_path):
    with pytest.raises(SlideReadError, match="no such file") as info:
        open_slide(tmp_path / "nope.svs")
    assert "nope.svs" in str(info.value)


def test_directory_that_is_not_zarr(tmp_path):
    with pytest.raises(SlideReadError, match="not a zarr group"):
        open_slide(tmp_path)


def test_unsupported_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(SlideReadError, match="unsupported format .txt"):
        open_slide(path)


def test_corrupt_tiff_is_named(tmp_path):
    path = tmp_path / "garbage.tif"
    path.write_bytes(b"II*\x00" + b"\x13" * 500)
    with pytest.raises(SlideReadError) as info:
        open_slide(path)
    assert "garbage.tif" in str(info.value)


def test_truncated_tiff_is_named(tmp_path, ome_pyramid):
    data = ome_pyramid.read_bytes()
    path = tmp_path / "truncated.ome.tif"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(SlideReadError) as info:
        open_slide(path)
    assert "truncated.ome.tif" in str(info.value)


def test_greyscale_is_shown_as_grey_rgb(tmp_path):
    import tifffile

    grey = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 256
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, grey.astype(np.uint8))
    slide = open_slide(path)
    rgb = slide.levels[0].compute()
    assert rgb.shape == (64, 64, 3)
    np.testing.assert_array_equal(rgb[..., 0], grey)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    assert "greyscale" in slide.notes
    assert slide.mpp is None


def test_rgba_is_composited_over_white(tmp_path):
    import tifffile

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:16, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    rgb = open_slide(path).levels[0].compute()
    assert tuple(rgb[0, 0]) == (200, 0, 0)
    assert tuple(rgb[-1, -1]) == (255, 255, 255)


def test_16bit_is_scaled_not_shown_black(tmp_path):
    import tifffile

    img = np.full((64, 64, 3), 4095, np.uint16)  # 12-bit data in a 16-bit container
    img[:32] = 2048
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, img, photometric="rgb")
    slide = open_slide(path)
    rgb = slide.levels[0].compute()
    assert rgb.dtype == np.uint8
    assert rgb[-1, -1, 0] == 255 and 120 < rgb[0, 0, 0] < 135
    assert "16-bit" in slide.notes


def test_float_images_are_refused(tmp_path):
    import tifffile

    path = tmp_path / "float.tif"
    tifffile.imwrite(path, np.zeros((16, 16, 3), np.float32), photometric="rgb")
    with pytest.raises(SlideReadError, match="float32"):
        open_slide(path)


def test_multichannel_fluorescence_is_refused(tmp_path):
    import tifffile

    path = tmp_path / "fluo.tif"
    tifffile.imwrite(path, np.zeros((5, 16, 16), np.uint8), metadata={"axes": "CYX"})
    with pytest.raises(SlideReadError, match="5 channels"):
        open_slide(path)


def test_png_tile_opens_with_unknown_mpp(tmp_path, rgb_small):
    from PIL import Image

    path = tmp_path / "tile.png"
    Image.fromarray(rgb_small).save(path)
    slide = open_slide(path)
    assert slide.mpp is None
    np.testing.assert_array_equal(slide.levels[0].compute(), rgb_small)
