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


def test_rgba_overlay_is_missing_where_transparent(ki67):
    """The plugin's own overlay is RGBA: alpha 0 (not computed yet) is NaN, never a residual."""
    rgba = np.dstack([ki67, np.full(ki67.shape[:2], 255, np.uint8)])
    rgba[:100, :, 3] = 0  # the top third is not computed yet
    rgba[:100, :, :3] = 0  # and its RGB is the buffer's fill (black), which must not count
    shifted = np.roll(ki67, 4, axis=0)
    for kind in R.RESIDUAL_KINDS:
        m = R.residual_map(kind, rgba, shifted)
        assert np.isnan(m[:100]).all() and np.isfinite(m[100:]).all(), kind
    eager = R.residual_map("dab", rgba, shifted)
    lazy = R.lazy_residual_map("dab", da.from_array(rgba, chunks=(64, 64, 4)), shifted, 64)
    assert np.allclose(lazy.compute(), eager, equal_nan=True, atol=1e-5)
    s = R.summarise(rgba, shifted)
    expected = R.summarise(ki67[100:], shifted[100:])
    assert s["missing_fraction"] == pytest.approx(1 / 3)
    assert s["mae"] == pytest.approx(expected["mae"])  # the means leave the missing pixels out
    rgba[..., 3] = 0
    with pytest.raises(ValueError, match="no computed virtual-stain pixels"):
        R.summarise(rgba, shifted)
    with pytest.raises(ValueError, match=r"\(y, x, 3\) or \(y, x, 4\)"):
        R.residual_map("rgb", ki67[..., :2], ki67[..., :2])


def test_cycle_with_the_shipped_demo_models_runs_at_their_mpp(ki67):
    """The demo pair (0.5 µm/px) on a 0.227 µm/px region: the reconstruction comes back on the
    region's grid and resembles the source far more than an unrelated image does."""
    from napari_virtualstain.core.metrics import ssim
    from napari_virtualstain.core.models import load_model

    models = DATA / "models"
    fwd = load_model(models / "demo-ki672he", device="cpu")
    back = load_model(models / "demo-he2ki67", device="cpu")
    src = ki67[:200, :240]
    rec = R.reconstruct(src, fwd, back, mpp=0.227)
    assert rec.shape == src.shape and rec.dtype == np.uint8
    unrelated = np.ascontiguousarray(np.rot90(src, 2))
    assert ssim(src, rec) > ssim(src, unrelated) + 0.1
