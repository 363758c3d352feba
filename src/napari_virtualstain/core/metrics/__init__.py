"""Evaluation metrics: one implementation for the CLI, the QA widget and the trainers.

Image quality (:mod:`.image`) is imported eagerly (numpy / scipy only); torch is imported inside
the torch functions. P-hash, segmentation and ratio metrics live in their own modules.
"""

from __future__ import annotations

from .image import MS_SSIM_WEIGHTS, mae, ms_ssim, ms_ssim_torch, psnr, ssim, ssim_map, ssim_torch

__all__ = [
    "MS_SSIM_WEIGHTS",
    "mae",
    "ms_ssim",
    "ms_ssim_torch",
    "psnr",
    "ssim",
    "ssim_map",
    "ssim_torch",
]
