"""The OpenSlide backend and ICC colour management, on files written here.

What is tested on real files: an OpenSlide "generic tiled TIFF" pyramid (the format OpenSlide
reads for any tiled TIFF) written with tifffile. No MIRAX, SCN, BIF, VMS or DICOM file can be
made here; the ``.scn`` test checks the dispatch only (OpenSlide detects the content, not the
name).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile

from napari_virtualstain.core.io import SlideReadError, open_slide
from napari_virtualstain.core.io.icc import ICC_TAG, to_srgb
from tests.conftest import tissue_like_rgb
from tests.support.icc import expected_srgb, wide_gamut_profile


def write_generic_tiled_tiff(path, base, mpp=0.5, n_levels=3, icc: bytes | None = None):
    """Each level a tiled page (not a SubIFD), resolution in pixels per cm: OpenSlide's layout."""
    extratags = [(ICC_TAG, "B", len(icc), icc, True)] if icc else []
    with tifffile.TiffWriter(path) as tif:
        level = base
        for k in range(n_levels):
            tif.write(
                level,
                tile=(128, 128),
                photometric="rgb",
                compression="zlib",
                resolution=(1e4 / (mpp * 2**k), 1e4 / (mpp * 2**k)),
                resolutionunit="CENTIMETER",
                subfiletype=0 if k == 0 else 1,
                extratags=extratags if k == 0 else [],
            )
            level = level[::2, ::2]
    return path


@pytest.fixture
def base():
    return tissue_like_rgb(700, 900, seed=3)


def test_generic_tiff_through_openslide_is_lazy_and_exact(tmp_path, base):
    pytest.importorskip("openslide")
    from napari_virtualstain.core.io.openslide import open_openslide

    path = write_generic_tiled_tiff(tmp_path / "generic.tif", base)
    slide = open_openslide(path)
    assert slide.format == "openslide:generic-tiff"
    assert slide.mpp == pytest.approx(0.5)
    assert [lv.shape for lv in slide.levels] == [(700, 900, 3), (350, 450, 3), (175, 225, 3)]
    assert slide.levels[0].chunksize == (512, 512, 3)  # whole 128 px tiles, 4 x 4 per chunk
    for k, level in enumerate(slide.levels):
        np.testing.assert_array_equal(level.compute(), base[:: 2**k, :: 2**k])
    # A region reads only what it needs and matches the pixels; outside the image is white.
    np.testing.assert_array_equal(slide.read_region(0, 600, 850, 50, 20), base[600:650, 850:870])
    edge = slide.read_region(0, 690, 890, 20, 20)
    assert (edge[10:, :] == 255).all() and (edge[:, 10:] == 255).all()
    # The graph pickles (dask distributed workers reopen the file themselves).
    again = pickle.loads(pickle.dumps(slide.levels[1][100:140, 200:260]))
    np.testing.assert_array_equal(again.compute(), base[::2, ::2][100:140, 200:260])


def test_open_slide_dispatches_openslide_suffixes(tmp_path, base):
    pytest.importorskip("openslide")
    path = write_generic_tiled_tiff(tmp_path / "case.scn", base)
    slide = open_slide(path)
    assert slide.format.startswith("openslide:") and slide.mpp == pytest.approx(0.5)
    np.testing.assert_array_equal(slide.levels[2].compute(), base[::4, ::4])


def test_unreadable_openslide_file_is_named(tmp_path):
    pytest.importorskip("openslide")
    bad = tmp_path / "scan.mrxs"
    bad.write_bytes(b"not a mirax slide")
    with pytest.raises(SlideReadError, match="scan.mrxs"):
        open_slide(bad)


def test_icc_profile_is_converted_to_srgb_on_reading(tmp_path, base):
    profile = wide_gamut_profile()
    path = write_generic_tiled_tiff(tmp_path / "profiled.tif", base, icc=profile)
    slide = open_slide(path)
    assert "converted to sRGB" in slide.notes and "wide-gamut" in slide.notes
    got = slide.levels[0].compute().astype(int)
    want = expected_srgb(base).astype(int)  # independent numpy colorimetry
    assert np.abs(got - want).max() <= 2
    assert np.abs(got - base).mean() > 3  # the conversion did change the colours
    plain = open_slide(write_generic_tiled_tiff(tmp_path / "plain.tif", base))
    np.testing.assert_array_equal(plain.levels[0].compute(), base)
    assert "ICC" not in plain.notes


def test_srgb_profile_leaves_pixels_alone(base, tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    slide = open_slide(write_generic_tiled_tiff(tmp_path / "srgb.tif", base, icc=srgb))
    np.testing.assert_array_equal(slide.levels[0].compute(), base)
    assert to_srgb(slide, b"garbage").notes.endswith("colours not converted")


def test_openslide_reads_the_icc_profile_too(tmp_path, base):
    pytest.importorskip("openslide")
    from napari_virtualstain.core.io.openslide import open_openslide

    path = write_generic_tiled_tiff(tmp_path / "profiled.tif", base, icc=wide_gamut_profile())
    slide = open_openslide(path)
    if "ICC" not in slide.notes:
        pytest.skip("this OpenSlide build exposes no ICC profile for generic TIFF")
    got = slide.levels[1].compute().astype(int)
    assert np.abs(got - expected_srgb(base[::2, ::2]).astype(int)).max() <= 2


def test_icc_profile_of_a_png_or_jpeg_tile(tmp_path, base):
    from PIL import Image

    profile = wide_gamut_profile()
    Image.fromarray(base).save(tmp_path / "tile.png", icc_profile=profile)
    slide = open_slide(tmp_path / "tile.png")
    assert "converted to sRGB" in slide.notes
    got = slide.levels[0].compute().astype(int)
    assert np.abs(got - expected_srgb(base).astype(int)).max() <= 2


def test_real_aperio_svs_through_openslide_matches_tifffile(shared_data):
    """A real scanner file (TCGA Aperio SVS, JPEG 2000 tiles, an sRGB ICC profile)."""
    pytest.importorskip("openslide")
    from napari_virtualstain.core.io.openslide import open_openslide

    path = shared_data / "he" / "tcga-cr-7395-01a-01-ts1.svs"
    ours, theirs = open_slide(path), open_openslide(path)
    assert theirs.format == "openslide:aperio"
    assert [lv.shape for lv in theirs.levels] == [lv.shape for lv in ours.levels]
    assert theirs.mpp == ours.mpp  # this file states no MPP: both say unknown
    assert "thumbnail" in theirs.associated and theirs.associated["thumbnail"].ndim == 3
    assert "ICC" not in theirs.notes and "ICC" not in ours.notes  # sRGB: left alone
    np.testing.assert_array_equal(theirs.levels[0].compute(), ours.levels[0].compute())
    # Level 1's downsample is 2.0005: OpenSlide resamples regions that do not start on a whole
    # level-1 pixel (sub-pixel shift), so only chunks at the origin match exactly.
    a, b = theirs.levels[1].compute().astype(int), ours.levels[1].compute().astype(int)
    np.testing.assert_array_equal(a[:512, :512], b[:512, :512])
    assert np.abs(a - b).mean() < 4


def test_dicom_wsi_opens_through_openslide():
    """A real DICOM-WSI file (made with wsidicomizer from a CMU-1 crop: tests/support/data/dicom)."""
    pytest.importorskip("openslide")
    from pathlib import Path

    from tests.support import PACKAGE_DATA

    path = Path(__file__).resolve().parents[2] / "support" / "data" / "dicom" / "cmu1_crop.dcm"
    slide = open_slide(path)
    assert slide.format == "openslide:dicom"
    assert slide.mpp == pytest.approx(0.499)  # from the DICOM pixel spacing
    assert slide.levels[0].shape == (512, 512, 3)
    # The same place of the SVS it came from (JPEG-recompressed twice on the way): much closer
    # to it than to the region 8 px beside it.
    svs = open_slide(PACKAGE_DATA / "cmu-1-small-region.svs").levels[0]
    dicom = slide.levels[0].compute().astype(int)
    here = np.abs(dicom - svs[1200:1712, 700:1212].compute().astype(int)).mean()
    beside = np.abs(dicom - svs[1208:1720, 708:1220].compute().astype(int)).mean()
    assert here < 10 and here < 0.5 * beside
