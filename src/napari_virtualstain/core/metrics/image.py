"""Full-reference image quality: SSIM, MS-SSIM, PSNR and MAE, in numpy and in torch.

The numpy functions take uint8 (or float) images shaped (y, x) or (y, x, c) and are what the CLI,
the QA widget and the residual maps report. The torch functions are differentiable and take NCHW
tensors; the trainers use them as losses. Both follow Wang et al.: an 11-tap Gaussian window with
sigma 1.5 px, K1 = 0.01, K2 = 0.03, population (biased) covariances, and for colour images the
mean over channels. With these settings ``ssim`` equals scikit-image's ``structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` and ``ms_ssim`` equals
TensorFlow's ``tf.image.ssim_multiscale`` (both checked in the tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

if TYPE_CHECKING:
    import torch

SIGMA_PX = 1.5
WINDOW_PX = 11
K1, K2 = 0.01, 0.03
# Wang, Simoncelli & Bovik 2003, Table 1: weights of scales 1 (full resolution) to 5.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    if x.ndim not in (2, 3):
        raise ValueError(f"expected a (y, x) or (y, x, c) image, found shape {x.shape}")
    return x.astype(np.float64), y.astype(np.float64)


def _default_range(x: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    if np.issubdtype(np.asarray(x).dtype, np.integer):
        return float(np.iinfo(np.asarray(x).dtype).max)
    raise ValueError("data_range is required for float images (e.g. 1.0 or 255.0)")


def _gaussian_kernel(window_px: int = WINDOW_PX, sigma_px: float = SIGMA_PX) -> np.ndarray:
    r = np.arange(window_px) - (window_px - 1) / 2.0
    g = np.exp(-(r**2) / (2.0 * sigma_px**2))
    return g / g.sum()


def _filter(img: np.ndarray, mode: str) -> np.ndarray:
    """Separable Gaussian over the spatial axes; ``mode='valid'`` crops what touched the border."""
    k = _gaussian_kernel()
    ndmode = "reflect" if mode == "valid" else mode
    out = ndi.correlate1d(img, k, axis=0, mode=ndmode)
    out = ndi.correlate1d(out, k, axis=1, mode=ndmode)
    if mode == "valid":
        pad = WINDOW_PX // 2
        out = out[pad:-pad, pad:-pad]
    return out


def _ssim_cs_maps(x, y, data_range: float, mode: str) -> tuple[np.ndarray, np.ndarray]:
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, mu_y = _filter(x, mode), _filter(y, mode)
    var_x = _filter(x * x, mode) - mu_x**2
    var_y = _filter(y * y, mode) - mu_y**2
    cov = _filter(x * y, mode) - mu_x * mu_y
    cs = (2.0 * cov + c2) / (var_x + var_y + c2)
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return luminance * cs, cs


def ssim_map(x: np.ndarray, y: np.ndarray, data_range: float | None = None) -> np.ndarray:
    """Local SSIM at every pixel (same (y, x) shape as the input; channels averaged).

    Borders are filled by reflection, so the map can be tiled with a halo of
    ``WINDOW_PX // 2`` pixels and match the untiled map exactly.
    """
    data_range = _default_range(x, data_range)
    xf, yf = _check_pair(x, y)
    # float32 is ~1.7x faster on whole views and off by < 1e-3 SSIM, invisible in a map
    s, _ = _ssim_cs_maps(xf.astype(np.float32), yf.astype(np.float32), data_range, mode="reflect")
    return (s.mean(axis=-1) if s.ndim == 3 else s).astype(np.float32)


def _short_side_check(shape: tuple[int, ...], n_scales: int) -> None:
    need = WINDOW_PX * 2 ** (n_scales - 1)
    if min(shape[:2]) < need:
        raise ValueError(
            f"images of {shape[0]}x{shape[1]} px are too small for {n_scales}-scale "
            f"MS-SSIM: the short side must be >= {need} px"
        )


def ssim(x: np.ndarray, y: np.ndarray, data_range: float | None = None) -> float:
    """Mean SSIM over the valid region (no border effects); 1.0 for identical images."""
    data_range = _default_range(x, data_range)
    xf, yf = _check_pair(x, y)
    _short_side_check(xf.shape, 1)
    s, _ = _ssim_cs_maps(xf, yf, data_range, mode="valid")
    return float(s.mean())


def _downsample2(img: np.ndarray) -> np.ndarray:
    # TensorFlow pads odd sizes symmetrically (repeat the last row / column), then 2x2 averages.
    pad = [(0, img.shape[0] % 2), (0, img.shape[1] % 2)] + [(0, 0)] * (img.ndim - 2)
    img = np.pad(img, pad, mode="symmetric")
    h, w = img.shape[0] // 2, img.shape[1] // 2
    return img.reshape(h, 2, w, 2, *img.shape[2:]).mean(axis=(1, 3))


def ms_ssim(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float | None = None,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
) -> float:
    """Multi-scale SSIM (Wang et al. 2003): product over scales of cs^w, times SSIM^w at the last.

    Per channel, then averaged over channels, as in ``tf.image.ssim_multiscale``. Needs a short side
    of at least ``11 * 2**(len(weights) - 1)`` px (176 px for the standard 5 scales).
    """
    data_range = _default_range(x, data_range)
    xf, yf = _check_pair(x, y)
    _short_side_check(xf.shape, len(weights))
    if xf.ndim == 2:
        xf, yf = xf[..., None], yf[..., None]
    factors = []
    for k in range(len(weights)):
        if k:
            xf, yf = _downsample2(xf), _downsample2(yf)
        s, cs = _ssim_cs_maps(xf, yf, data_range, mode="valid")
        # per-channel means; negative cs would make fractional powers undefined (TF uses relu)
        last = k == len(weights) - 1
        factors.append(np.maximum((s if last else cs).mean(axis=(0, 1)), 0.0))
    per_channel = np.prod(np.stack(factors) ** np.asarray(weights)[:, None], axis=0)
    return float(per_channel.mean())


def psnr(x: np.ndarray, y: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    data_range = _default_range(x, data_range)
    xf, yf = _check_pair(x, y)
    mse = float(np.mean((xf - yf) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def mae(x: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute error in the images' own units (0-255 intensity levels for uint8)."""
    xf, yf = _check_pair(x, y)
    return float(np.mean(np.abs(xf - yf)))


# ----------------------------------------------------------------------------- torch


def _torch_window(channels: int, like: torch.Tensor) -> torch.Tensor:
    import torch

    g = torch.as_tensor(_gaussian_kernel(), dtype=like.dtype, device=like.device)
    return g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)


def _torch_ssim_cs(x: torch.Tensor, y: torch.Tensor, data_range: float):
    import torch.nn.functional as F

    c = x.shape[1]
    w = _torch_window(c, x)

    def blur(t):
        t = F.conv2d(t, w, groups=c)
        return F.conv2d(t, w.transpose(2, 3), groups=c)

    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    s = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
    return s.mean(dim=(2, 3)), cs.mean(dim=(2, 3))  # (N, C) each


def _check_nchw(x: torch.Tensor, y: torch.Tensor, n_scales: int) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"expected two NCHW tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    _short_side_check(tuple(x.shape[2:]), n_scales)


def ssim_torch(
    x: torch.Tensor,
    y: torch.Tensor,
    value_range: tuple[float, float] = (-1.0, 1.0),
    reduction: str = "mean",
) -> torch.Tensor:
    """Differentiable SSIM of NCHW tensors.

    ``value_range`` is the images' range: (-1, 1) for generator outputs (the default) or (0, 1).
    ``reduction='none'`` gives one value per image (N,), ``'mean'`` a scalar.
    """
    _check_nchw(x, y, 1)
    # SSIM's luminance term is not shift invariant: measure from the range's floor, as numpy does
    x, y = x - value_range[0], y - value_range[0]
    s, _ = _torch_ssim_cs(x, y, float(value_range[1] - value_range[0]))
    per_image = s.mean(dim=1)
    return per_image.mean() if reduction == "mean" else per_image


def ms_ssim_torch(
    x: torch.Tensor,
    y: torch.Tensor,
    value_range: tuple[float, float] = (-1.0, 1.0),
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    reduction: str = "mean",
) -> torch.Tensor:
    """Differentiable MS-SSIM of NCHW tensors; same definition as :func:`ms_ssim`."""
    import torch
    import torch.nn.functional as F

    _check_nchw(x, y, len(weights))
    data_range = float(value_range[1] - value_range[0])
    x, y = x - value_range[0], y - value_range[0]
    factors = []
    for k in range(len(weights)):
        if k:
            pad = (0, x.shape[3] % 2, 0, x.shape[2] % 2)
            x = F.avg_pool2d(F.pad(x, pad, mode="replicate"), 2)
            y = F.avg_pool2d(F.pad(y, pad, mode="replicate"), 2)
        s, cs = _torch_ssim_cs(x, y, data_range)
        last = k == len(weights) - 1
        # clamp slightly above 0: the gradient of t**w is infinite at t = 0
        factors.append(torch.clamp(s if last else cs, min=1e-8))
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    per_image = torch.prod(torch.stack(factors) ** w, dim=0).mean(dim=1)
    return per_image.mean() if reduction == "mean" else per_image
