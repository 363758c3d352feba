"""Synthetic H-DAB images with known nuclei, rendered through Beer-Lambert.

Every nucleus is a disc of hematoxylin (negative) or hematoxylin + DAB (positive) optical density
on glass of a known, not-white, colour, so tests know the true count, classes and areas.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_virtualstain.core.deconvolution import QUPATH_HDAB

GLASS_RGB = (236.0, 234.0, 242.0)


@dataclass
class SyntheticNuclei:
    rgb: np.ndarray  # (H, W, 3) uint8
    truth: np.ndarray  # (H, W) int, nucleus index + 1
    positive: np.ndarray  # (n,) bool
    centres_px: np.ndarray  # (n, 2) (y, x)
    radii_px: np.ndarray  # (n,)
    mpp: float

    @property
    def labelling_index(self) -> float:
        return float(self.positive.mean())

    @property
    def area_ratio(self) -> float:
        areas = np.bincount(self.truth.ravel(), minlength=len(self.positive) + 1)[1:]
        return float(areas[self.positive].sum() / areas.sum())


def render(
    centres_px,
    radii_px,
    positive,
    shape,
    mpp: float,
    stains=QUPATH_HDAB,
    glass=GLASS_RGB,
    hema_od: float = 0.55,
    dab_od: float = 0.7,
    positive_hema_od: float = 0.35,
    noise: float = 1.5,
    seed: int = 0,
) -> SyntheticNuclei:
    """Discs at ``centres_px`` (later ones drawn over earlier ones where they touch)."""
    truth = np.zeros(shape, int)
    for i, ((cy, cx), r) in enumerate(zip(centres_px, radii_px, strict=True)):
        # Draw within the disc's box only: whole-image masks cost seconds for hundreds of discs.
        y0, y1 = max(0, int(cy - r) - 1), min(shape[0], int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r) - 1), min(shape[1], int(cx + r) + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        truth[y0:y1, x0:x1][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i + 1
    positive = np.asarray(positive, bool)
    idx = truth - 1
    inside = truth > 0
    conc_h = np.where(inside, np.where(positive[idx], positive_hema_od, hema_od), 0.0)
    conc_d = np.where(inside, np.where(positive[idx], dab_od, 0.02), 0.0)
    m = stains.array
    od = conc_h[..., None] * m[0] + conc_d[..., None] * m[1]
    rgb = np.asarray(glass) * 10.0 ** (-od)
    rgb += np.random.default_rng(seed).normal(0, noise, rgb.shape)
    return SyntheticNuclei(
        np.clip(np.round(rgb), 0, 255).astype(np.uint8),
        truth,
        positive,
        np.asarray(centres_px, float),
        np.asarray(radii_px, float),
        mpp,
    )


def grid_of_nuclei(
    n_rows: int = 8,
    n_cols: int = 8,
    mpp: float = 0.5,
    radius_um: float = 4.0,
    spacing_um: float = 16.0,
    positive_fraction: float = 0.3,
    seed: int = 0,
    jitter_radius: float = 0.25,
) -> SyntheticNuclei:
    """Separate nuclei on a grid with a known positive fraction and varied sizes."""
    rng = np.random.default_rng(seed)
    n = n_rows * n_cols
    positive = np.zeros(n, bool)
    positive[rng.choice(n, int(round(positive_fraction * n)), replace=False)] = True
    spacing = spacing_um / mpp
    cy, cx = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    centres = np.stack([cy.ravel(), cx.ravel()], 1) * spacing + spacing / 2
    radii = radius_um / mpp * (1 + jitter_radius * rng.uniform(-1, 1, n))
    shape = (int(n_rows * spacing), int(n_cols * spacing))
    return render(centres, radii, positive, shape, mpp, seed=seed)


def grid_tile_png(path: Path, **grid) -> tuple[Path, SyntheticNuclei]:
    """``grid_of_nuclei(**grid)`` written as an RGB PNG at ``path``: (path, the nuclei)."""
    from PIL import Image

    syn = grid_of_nuclei(**grid)
    Image.fromarray(syn.rgb).save(path)
    return path, syn


def touching_pairs(n_pairs: int = 6, mpp: float = 0.5, radius_um: float = 4.0) -> SyntheticNuclei:
    """Pairs of equal discs whose centres are 1.7 radii apart (they touch and overlap a bit)."""
    r = radius_um / mpp
    centres = []
    for i in range(n_pairs):
        cy = (i + 0.5) * 5 * r
        centres += [(cy, 2.5 * r), (cy, 2.5 * r + 1.7 * r)]
    shape = (int(n_pairs * 5 * r), int(7 * r))
    pos = np.zeros(len(centres), bool)
    return render(centres, [r] * len(centres), pos, shape, mpp)
