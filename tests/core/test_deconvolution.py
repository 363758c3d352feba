"""Colour deconvolution: checked against skimage's rgb2hed and against rendered stains."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import color, data

from napari_virtualstain.core.deconvolution import (
    QUPATH_HDAB,
    QUPATH_HE,
    StainVectors,
    deconvolve,
    estimate_background,
    estimate_stain_vectors,
    get_stain_vectors,
    optical_density,
    resolve_stains,
    stain_channel,
)
from tests.support.ki67_synthetic import GLASS_RGB, grid_of_nuclei, render


def test_matches_skimage_rgb2hed_on_its_ihc_image():
    ihc = data.immunohistochemistry()
    expected = color.rgb2hed(ihc)
    # skimage scales OD by 1/6 (log(I) / log(1e-6)) and uses I0 = 255.
    ours = deconvolve(ihc, get_stain_vectors("skimage_hed"), background=255) / 6.0
    valid = (ihc > 0).all(axis=-1)  # skimage maps 0 to 1e-6, we clamp it to 1 grey level
    assert valid.mean() > 0.99
    np.testing.assert_allclose(ours[valid], expected[valid], atol=1e-5)


def test_qupath_vectors_are_unit_and_residual_is_orthogonal():
    m = QUPATH_HDAB.array
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-9)
    assert abs(m[2] @ m[0]) < 1e-9 and abs(m[2] @ m[1]) < 1e-9
    # The published QuPath values, normalised.
    np.testing.assert_allclose(m[0], np.array([0.651, 0.701, 0.290]) / 1.0, atol=2e-3)
    np.testing.assert_allclose(m[1], np.array([0.269, 0.568, 0.778]) / 1.0, atol=2e-3)
    assert QUPATH_HDAB.stains == ("hematoxylin", "dab", "residual")


def test_rendered_concentrations_are_recovered():
    # A pixel of known hematoxylin and DAB OD through Beer-Lambert on a grey glass.
    glass = np.array(GLASS_RGB)
    for h, d in [(0.3, 0.0), (0.0, 0.5), (0.4, 0.6)]:
        od = h * QUPATH_HDAB.array[0] + d * QUPATH_HDAB.array[1]
        pixel = np.round(glass * 10 ** (-od)).astype(np.uint8)[None, None]
        conc = deconvolve(pixel, QUPATH_HDAB, background=glass)[0, 0]
        assert conc[0] == pytest.approx(h, abs=0.02)
        assert conc[1] == pytest.approx(d, abs=0.02)
        assert stain_channel(pixel, QUPATH_HDAB, "dab", glass)[0, 0] == pytest.approx(d, abs=0.02)


def test_background_is_read_from_the_image_not_assumed_white():
    syn = grid_of_nuclei()
    bg = estimate_background(syn.rgb)
    np.testing.assert_allclose(bg, GLASS_RGB, atol=3)
    od = optical_density(syn.rgb, bg)
    assert np.median(od[syn.truth == 0]) < 0.01  # glass has zero OD
    # An image with no glass at all does not take tissue for white.
    tissue_only = np.full((64, 64, 3), (120, 90, 160), np.uint8)
    np.testing.assert_allclose(estimate_background(tissue_only), 255)


def test_macenko_estimate_recovers_rotated_vectors():
    h = np.array([0.75, 0.62, 0.23])
    d = np.array([0.33, 0.53, 0.78])
    truth = StainVectors.from_vectors("truth", ("hematoxylin", "dab"), h, d)
    syn = grid_of_nuclei(positive_fraction=0.4)
    # Pure-DAB and pure-hematoxylin objects: Macenko finds the extreme directions present.
    rendered = render(
        syn.centres_px,
        syn.radii_px,
        syn.positive,
        syn.rgb.shape[:2],
        0.5,
        stains=truth,
        positive_hema_od=0.0,
    )
    est = estimate_stain_vectors(rendered.rgb, QUPATH_HDAB)
    for k in range(2):
        cos = est.array[k] @ truth.array[k]
        assert np.degrees(np.arccos(min(cos, 1.0))) < 4.0
    assert "estimated" in est.notes and est.name == "estimated_hdab"
    assert np.degrees(np.arccos(min(QUPATH_HDAB.array[0] @ truth.array[0], 1.0))) > 6


def test_estimate_keeps_reference_for_an_absent_stain():
    syn = grid_of_nuclei(positive_fraction=0.0)
    est = estimate_stain_vectors(syn.rgb, QUPATH_HDAB)
    assert "reference kept" in est.notes or np.allclose(
        est.array[1], QUPATH_HDAB.array[1], atol=0.2
    )


def test_resolve_and_errors():
    assert resolve_stains("qupath") is QUPATH_HDAB
    assert resolve_stains("qupath", he=True) is QUPATH_HE
    assert resolve_stains("skimage").name == "skimage_hdab"
    with pytest.raises(ValueError, match="unknown stain vectors"):
        get_stain_vectors("nope")
    with pytest.raises(ValueError, match="needs the image"):
        resolve_stains("estimate")
    with pytest.raises(ValueError, match="singular"):
        StainVectors("bad", ("a", "b", "c"), ((1, 0, 0), (1, 0, 0), (0, 0, 1)))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        optical_density(np.zeros((4, 4), np.uint8), 255)
