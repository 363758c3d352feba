"""Image metrics against scikit-image, TensorFlow and closed-form values."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_virtualstain.core.metrics import mae, ms_ssim, psnr, ssim, ssim_map
from tests.support import PACKAGE_DATA

HE = PACKAGE_DATA / "OS-1-detail_HE.ome.tif"


@pytest.fixture(scope="module")
def pair():
    a = tifffile.imread(HE)[:200, :233]
    rng = np.random.default_rng(0)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_identical_images():
    a = tifffile.imread(HE)[:64, :64]
    assert ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, a) == math.inf
    assert mae(a, a) == 0.0
    assert np.allclose(ssim_map(a, a), 1.0)


def test_known_noise_gives_known_psnr_and_mae():
    rng = np.random.default_rng(1)
    a = rng.integers(20, 235, size=(50, 60, 3)).astype(np.uint8)
    signs = rng.choice([-10, 10], size=a.shape)
    b = (a.astype(int) + signs).astype(np.uint8)  # no clipping: MSE is exactly 100
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100.0), abs=1e-9)
    assert mae(a, b) == pytest.approx(10.0)


def test_ssim_and_psnr_match_scikit_image(pair):
    a, b = pair
    ref = structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
        data_range=255,
    )
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert ssim(a[..., 0], b[..., 0]) == pytest.approx(
        structural_similarity(
            a[..., 0],
            b[..., 0],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        ),
        abs=1e-9,
    )
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    assert ssim(a, b) < 0.9  # the noise is visible to SSIM


def test_ssim_map_is_local(pair):
    a, _ = pair
    b = a.copy()
    b[100:140, 100:140] = 255 - b[100:140, 100:140]
    m = ssim_map(a, b)
    assert m.shape == a.shape[:2]
    assert m[120, 120] < 0.5 and m[20, 20] == pytest.approx(1.0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(np.zeros((20, 20), np.uint8), np.zeros((20, 21), np.uint8))
    with pytest.raises(ValueError, match="176"):
        ms_ssim(np.zeros((100, 300, 3), np.uint8), np.zeros((100, 300, 3), np.uint8))
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros((20, 20)), np.ones((20, 20)))


@pytest.mark.slow
def test_torch_matches_numpy_and_is_differentiable(pair):
    torch = pytest.importorskip("torch")
    from napari_virtualstain.core.metrics import ms_ssim_torch, ssim_torch

    a, b = pair
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].double() / 127.5 - 1
    tb = (torch.from_numpy(b).permute(2, 0, 1)[None].double() / 127.5 - 1).requires_grad_()
    assert ssim_torch(ta, tb).item() == pytest.approx(ssim(a, b), abs=1e-9)
    loss = 1 - ms_ssim_torch(ta, tb)
    assert loss.item() == pytest.approx(1 - ms_ssim(a, b), abs=1e-9)
    loss.backward()
    assert torch.isfinite(tb.grad).all() and tb.grad.abs().sum() > 0
    per = ssim_torch(ta.repeat(2, 1, 1, 1), torch.cat([ta, tb.detach()]), reduction="none")
    assert per.shape == (2,) and per[0].item() == pytest.approx(1.0)
    # (0, 1) inputs give the same value as the same images in (-1, 1)
    assert ssim_torch((ta + 1) / 2, (tb.detach() + 1) / 2, value_range=(0, 1)).item() == (
        pytest.approx(ssim(a, b), abs=1e-9)
    )


_TF_SCRIPT = """
import json, sys, numpy as np, tensorflow as tf
a = np.load(sys.argv[1]).astype("float32"); b = np.load(sys.argv[2]).astype("float32")
print(json.dumps([float(tf.image.ssim_multiscale(a[None], b[None], 255.0)[0]),
                  float(tf.image.ssim(a[None], b[None], 255.0)[0])]))
"""


@pytest.mark.slow
def test_ms_ssim_matches_tensorflow(pair, tmp_path):
    # find_spec, not importorskip: importing TensorFlow here would crash napari's GL later
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed")
    a, b = pair
    b = b.copy()
    b[:, :60] = np.roll(b[:, :60], 3, axis=0)  # add structure change on top of the noise
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    # TensorFlow runs in a subprocess: it must never share a process with napari's GL (ENV.md)
    out = subprocess.run(
        [sys.executable, "-c", _TF_SCRIPT, str(tmp_path / "a.npy"), str(tmp_path / "b.npy")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    tf_ms, tf_ssim = json.loads(out.stdout.strip().splitlines()[-1])
    assert ms_ssim(a, b) == pytest.approx(tf_ms, abs=2e-5)
    assert ssim(a, b) == pytest.approx(tf_ssim, abs=2e-5)
    assert 0.5 < tf_ms < 0.999  # a non-trivial value, not the identical-image 1.0
