"""Stain-level metrics of whole images (no pairing needed): the DAB-positive tissue fraction."""

from __future__ import annotations

import numpy as np

# QuPath's default DAB OD threshold of a positive pixel / nucleus
DAB_OD_POSITIVE = 0.2


def dab_fraction(rgb: np.ndarray, dab_od_min: float = DAB_OD_POSITIVE) -> float:
    """Fraction of tissue pixels whose DAB optical density is at least ``dab_od_min``.

    Colour deconvolution with QuPath's H-DAB vectors against the image's own glass level; 0
    when the image holds no tissue. Used to compare the DAB of generated and real IHC sets
    without pairs.
    """
    from ..deconvolution import QUPATH_HDAB, estimate_background, stain_channel
    from ..engine.tissue import tissue_mask

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (y, x, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    tissue = tissue_mask(rgb)
    if not tissue.any():
        return 0.0
    dab = stain_channel(rgb, QUPATH_HDAB, "dab", estimate_background(rgb))
    return float((dab[tissue] >= dab_od_min).mean())
