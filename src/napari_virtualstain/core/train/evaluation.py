"""Held-out evaluation shared by the trainers: image metrics averaged over tile pairs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The standard 5-scale MS-SSIM needs a short side of 176 px; smaller held-out tiles use as many
# scales as fit (the CSV says how many), because a missing column would hide a failed epoch.
MS_SSIM_MIN_PX = 11


def ms_ssim_fitting(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """MS-SSIM with as many of the 5 standard scales as the tile size allows.

    Returns
    -------
    value, n_scales : float, int
        With fewer than 5 scales the standard weights of the first scales are renormalised.
    """
    from ..metrics import MS_SSIM_WEIGHTS, ms_ssim

    short = min(x.shape[:2])
    n_scales = 1
    while n_scales < len(MS_SSIM_WEIGHTS) and MS_SSIM_MIN_PX * 2**n_scales <= short:
        n_scales += 1
    weights = np.asarray(MS_SSIM_WEIGHTS[:n_scales])
    return ms_ssim(x, y, weights=tuple(weights / weights.sum())), n_scales


def image_metrics(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """SSIM, MS-SSIM, PSNR and MAE of one uint8 RGB pair (the seed paper's Fig. 3 metrics)."""
    from ..metrics import mae, psnr, ssim

    value, n_scales = ms_ssim_fitting(reference, test)
    return {
        "ssim": ssim(reference, test),
        "ms_ssim": value,
        "ms_ssim_scales": float(n_scales),
        "psnr": min(psnr(reference, test), 100.0),  # identical tiles give inf; cap for plots
        "mae": mae(reference, test),
    }


def mean_metrics(rows: Sequence[dict[str, float]], prefix: str = "") -> dict[str, float]:
    """Average per-tile metric dicts; keys get ``prefix``."""
    if not rows:
        return {}
    keys = rows[0].keys()
    return {f"{prefix}{k}": float(np.mean([r[k] for r in rows])) for k in keys}


def make_hasher(weights: str = "imagenet"):
    """A P-hasher whose network is loaded now, so missing weights fail before training starts."""
    from ..metrics import PHasher

    hasher = PHasher(weights)
    _ = hasher.weights_used  # loads the network (or raises with the file to download)
    return hasher


def phash_metric(hasher, generated: np.ndarray, reference: np.ndarray) -> float:
    """Perceptual-hash similarity between a generated tile and its reference (Table 1)."""
    from ..metrics import hash_correlation

    return hash_correlation(hasher.hash(generated), hasher.hash(reference))
