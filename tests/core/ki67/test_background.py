"""The glass level holds on yellowish and grey glass: every OD, and so the ratio, depends on it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.deconvolution import estimate_background
from napari_virtualstain.core.ki67.pipeline import measure_rois
from tests.support.ki67_synthetic import grid_of_nuclei, render

TINTS = {
    "white": (250.0, 250.0, 250.0),
    "yellowish": (244.0, 230.0, 178.0),
    "grey": (196.0, 196.0, 196.0),
    "dark grey": (165.0, 165.0, 168.0),
}


def _on_glass(glass):
    base = grid_of_nuclei(n_rows=10, n_cols=10, positive_fraction=0.3, seed=5)
    syn = render(
        base.centres_px, base.radii_px, base.positive, base.rgb.shape[:2], 0.5,
        glass=glass, dab_od=0.45, seed=5,
    )  # fmt: skip
    return syn


@pytest.mark.parametrize("tint", list(TINTS))
def test_glass_level_is_the_tint_not_white(tint):
    syn = _on_glass(TINTS[tint])
    np.testing.assert_allclose(estimate_background(syn.rgb), TINTS[tint], atol=3)


def test_ratio_and_dab_od_do_not_depend_on_the_glass_tint():
    runs = {k: measure_rois(_on_glass(g).rgb, 0.5) for k, g in TINTS.items()}
    truth = _on_glass(TINTS["white"])
    white = runs["white"].measurements[0].nuclei
    for tint, run in runs.items():
        (r,) = run.results
        nuclei = run.measurements[0].nuclei
        assert r.n_nuclei == 100, tint
        assert r.n_positive == int(truth.positive.sum()), tint
        np.testing.assert_allclose(run.background_rgb, TINTS[tint], atol=3, err_msg=tint)
        # Rendered positive DAB OD is 0.45: the measured means agree with white glass.
        pos = np.sort(nuclei.dab_od_mean[nuclei.positive])
        np.testing.assert_allclose(pos, np.sort(white.dab_od_mean[white.positive]), atol=0.03)
        assert r.n_faint == 0, tint


def test_little_glass_is_still_found_and_no_glass_is_not_invented():
    syn = _on_glass(TINTS["yellowish"])
    # Crop to the nuclei so that glass is a small share (gaps between discs only).
    crop = syn.rgb[4:-4, 4:-4]
    np.testing.assert_allclose(estimate_background(crop), TINTS["yellowish"], atol=4)
    tissue_only = np.full((64, 64, 3), (130, 95, 160), np.uint8)
    np.testing.assert_allclose(estimate_background(tissue_only), 255)
