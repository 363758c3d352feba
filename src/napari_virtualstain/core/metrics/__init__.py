"""Evaluation metrics: one implementation for the CLI, the QA widget and the trainers.

Nothing here imports torch at module level; the torch functions import it when called.
"""

from __future__ import annotations

from .image import MS_SSIM_WEIGHTS, mae, ms_ssim, ms_ssim_torch, psnr, ssim, ssim_map, ssim_torch
from .phash import PHasher, hash_correlation, phash_similarity
from .ratio import RatioMetrics, confusion_matrix, ratio_metrics
from .segmentation import (
    IOU_THRESHOLDS,
    MatchResult,
    dice,
    f1_curve,
    match_instances,
    pooled_curve,
)
from .stain import dab_fraction

__all__ = [
    "IOU_THRESHOLDS",
    "MS_SSIM_WEIGHTS",
    "MatchResult",
    "PHasher",
    "RatioMetrics",
    "confusion_matrix",
    "dab_fraction",
    "dice",
    "f1_curve",
    "hash_correlation",
    "mae",
    "match_instances",
    "ms_ssim",
    "ms_ssim_torch",
    "phash_similarity",
    "pooled_curve",
    "psnr",
    "ratio_metrics",
    "ssim",
    "ssim_map",
    "ssim_torch",
]
