"""Residual maps: signs and units, tiled == untiled, cycle error with real torch generators,
DAB-positivity disagreement from the Ki-67 measurements, and region summaries."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_virtualstain.core import residual as R
from napari_virtualstain.core.deconvolution import QUPATH_HDAB
from tests.support import PACKAGE_DATA

DATA = PACKAGE_DATA


@pytest.fixture(scope="module")
def ki67():
    return tifffile.imread(DATA / "OS-2-ndpi_Ki67.ome.tif")[:300, :300].copy()


def _dab_only(od_dab: float, shape=(40, 40)) -> np.ndarray:
    """An RGB image holding exactly ``od_dab`` of pure DAB on white glass."""
    od = od_dab * QUPATH_HDAB.array[QUPATH_HDAB.index("dab")]
    rgb = np.round(255.0 * 10.0 ** (-od)).astype(np.uint8)
    return np.broadcast_to(rgb, (*shape, 3)).copy()


def test_signs_and_units_of_each_kind():
    white = np.full((40, 40, 3), 255, np.uint8)
    brown = _dab_only(0.5)
    assert R.residual_map("rgb", brown, white).mean() < 0  # virtual darker -> negative
    glass = (np.array([255.0] * 3), np.array([255.0] * 3))
    dab = R.residual_map("dab", brown, white, backgrounds=glass)
    assert dab.mean() == pytest.approx(0.5, abs=0.02)  # OD units of DAB
    hema = R.residual_map("hematoxylin", brown, white, backgrounds=glass)
    assert abs(hema.mean()) < 0.05  # DAB alone leaves hematoxylin unchanged
    assert R.residual_map("od", brown, white, backgrounds=glass).mean() > 0
    assert np.allclose(R.residual_map("ssim", brown, brown), 1.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        R.residual_map("eosin-ish", brown, white)
    with pytest.raises(ValueError, match="differ in size"):
        R.residual_map("rgb", brown, white[:30])


@pytest.mark.parametrize("kind", R.RESIDUAL_KINDS)
def test_lazy_tiles_equal_the_whole_image(ki67, kind):
    b = np.roll(ki67, 3, axis=1)
    bg = (R.sample_background(ki67), R.sample_background(b))
    whole = R.residual_map(kind, ki67, b, backgrounds=bg)
    lazy = R.lazy_residual_map(
        kind, da.from_array(ki67, chunks=(100, 100, 3)), b, chunk_px=128, backgrounds=bg
    )
    assert lazy.chunks[0] == (128, 128, 44) and lazy.dtype == np.float32
    assert np.allclose(lazy.compute(), whole, atol=1e-5)


def test_cycle_error_with_torch_generators(ki67):
    torch = pytest.importorskip("torch")

    def conv(sign: float):
        m = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            m.weight.copy_(sign * torch.eye(3).view(3, 3, 1, 1))
            m.bias.zero_()
        return m

    invert, identity = conv(-1.0), conv(1.0)
    src = ki67[:96, :80]
    # inverting twice reconstructs the source (up to the uint8 rounding of the middle image)
    rec = R.reconstruct(src, invert, invert)
    assert np.abs(rec.astype(int) - src).max() <= 1
    # a broken backward generator leaves the inverted image: source - reconstruction is known
    bad = R.reconstruct(src, invert, identity)
    err = R.residual_map("rgb", src, bad)
    expected = (2.0 * src.astype(np.float32) - 255.0).mean(axis=-1) / 255.0
    assert np.abs(err - expected).max() < 2 / 255
    lazy = R.lazy_reconstruction(src, invert, lambda x: 255 - x, halo_px=8, chunk_px=48)
    assert np.abs(lazy.compute().astype(int) - src).max() <= 1


def test_generator_that_changes_size_is_reported(ki67):
    with pytest.raises(ValueError, match="generator pair returned"):
        R.reconstruct(ki67[:64, :64], lambda x: x[:32], lambda x: x)
    with pytest.raises(TypeError, match="cannot run"):
        R.as_rgb_function(42)


def test_dab_disagreement_counts_nuclei():
    labels = np.zeros((60, 60), np.int32)
    for i, (y, x) in enumerate([(5, 5), (5, 35), (35, 5), (35, 35)], start=1):
        labels[y : y + 15, x : x + 15] = i
    glass = np.full((60, 60, 3), 250, np.uint8)
    a, b = glass.copy(), glass.copy()
    brown = _dab_only(0.6, (15, 15))
    a[5:20, 5:20] = brown  # nucleus 1: positive in both
    b[5:20, 5:20] = brown
    a[5:20, 35:50] = brown  # nucleus 2: only in a
    b[35:50, 5:20] = brown  # nucleus 3: only in b; nucleus 4 negative in both
    d = R.dab_disagreement(labels, a, b, mpp=0.5)
    assert (d.n_nuclei, d.both_positive, d.both_negative, d.only_a, d.only_b) == (4, 1, 1, 1, 1)
    assert d.agreement == 0.5
    assert np.all(d.layer[labels == 2] == R.POSITIVE_ONLY_IN_A)
    assert np.all(d.layer[labels == 3] == R.POSITIVE_ONLY_IN_B)
    assert np.all(d.layer[(labels == 1) | (labels == 4) | (labels == 0)] == 0)


def test_summary_of_a_region(ki67):
    s_same = R.summarise(ki67, ki67)
    assert s_same["ssim"] == pytest.approx(1.0) and s_same["psnr_db"] == float("inf")
    assert s_same["mean_abs_dab"] == 0.0
    shifted = np.roll(ki67, 4, axis=0)
    s = R.summarise(ki67, shifted)
    assert s["ssim"] < 0.9 and s["mean_abs_rgb"] > 0 and np.isfinite(s["psnr_db"])
    mask = np.zeros(ki67.shape[:2], bool)
    mask[:50] = True
    assert R.summarise(ki67, shifted, mask=mask)["mean_abs_rgb"] != s["mean_abs_rgb"]
    with pytest.raises(ValueError, match="non-empty"):
        R.summarise(ki67, shifted, mask=np.zeros_like(mask))


def test_iter_qa_builds_every_map_and_reports_progress(ki67):
    from napari_virtualstain.core.registration import Registration, run_to_end

    real = ki67
    virtual = np.roll(ki67, 2, axis=1)
    labels = np.zeros((100, 120), np.int32)
    labels[10:30, 10:30] = 1
    req = R.QARequest(
        virtual,
        real,
        0.227,
        (50, 40, 150, 160),
        labels=labels,
        source=virtual,
        forward=lambda x: 255 - x,
        backward=lambda x: 255 - x,
    )
    gen = R.iter_qa(req)
    fractions = [next(gen)[0] for _ in range(3)]
    assert fractions == sorted(fractions)
    result = run_to_end(gen)
    assert set(result.seconds) == {*R.RESIDUAL_KINDS, "cycle", "disagreement"}
    assert result.maps["dab residual"][0].shape == (100, 120)
    assert np.abs(result.maps["cycle error (source - reconstruction)"][0]).max() == 0
    assert result.summary["nuclei_n_nuclei"] == 1 and result.summary["ssim"] < 1
    # with an identity registration the real slide is warped onto the virtual grid
    ident = Registration(
        ((1, 0, 0), (0, 1, 0), (0, 0, 1)), 0.227, 0.227, real.shape[:2], real.shape[:2], 1.0
    )
    warped = run_to_end(
        R.iter_qa(
            R.QARequest(
                virtual, real, 0.227, (50, 40, 150, 160), kinds=("rgb",), registration=ident
            )
        )
    )
    assert np.allclose(warped.maps["rgb residual"][0], result.maps["rgb residual"][0], atol=1e-6)
    with pytest.raises(ValueError, match="not on one grid"):
        R.QARequest(virtual, real[:100], 0.227, (0, 0, 10, 10))
    with pytest.raises(ValueError, match="not inside"):
        R.QARequest(virtual, real, 0.227, (0, 0, 10, 10**6))


def test_iter_lazy_qa_pyramids_match_eager_maps(ki67):
    from napari_virtualstain.core.registration import Registration, run_to_end

    virtual = np.roll(ki67, 3, axis=0)
    levels_v = [da.from_array(virtual, chunks=(128, 128, 3)), virtual[::2, ::2].copy()]
    levels_r = [da.from_array(ki67, chunks=(128, 128, 3)), ki67[::2, ::2].copy()]
    result = run_to_end(R.iter_lazy_qa(levels_v, levels_r, 0.5, kinds=("rgb", "ssim")))
    rgb_levels, kind = result.maps["rgb residual"]
    assert kind == "rgb" and isinstance(rgb_levels[0], da.Array)
    assert isinstance(rgb_levels[1], np.ndarray)  # the coarsest level is computed up front
    assert np.allclose(rgb_levels[0].compute(), R.residual_map("rgb", virtual, ki67))
    assert result.summary["summary_level_mpp"] == 1.0
    ident = Registration(
        ((1, 0, 0), (0, 1, 0), (0, 0, 1)), 0.5, 0.5, ki67.shape[:2], ki67.shape[:2], 1.0
    )
    warped = run_to_end(
        R.iter_lazy_qa(levels_v, levels_r, 0.5, kinds=("rgb",), registration=ident, real_mpp=0.5)
    )
    assert np.allclose(
        warped.maps["rgb residual"][0][0].compute(), rgb_levels[0].compute(), atol=1e-6
    )
    with pytest.raises(ValueError, match="not on one grid"):
        run_to_end(R.iter_lazy_qa(levels_v, [levels_r[0][:100]], 0.5))
