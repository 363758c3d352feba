"""The H-DAB stain check: the bundled H&E samples are refused, the Ki-67 sample is accepted."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.io import open_slide
from napari_virtualstain.core.ki67 import UNVERIFIED, StainCheckError, check_hdab
from napari_virtualstain.core.ki67.pipeline import measure_rois, overview
from napari_virtualstain.core.roi import ROI
from tests.support import PACKAGE_DATA
from tests.support.ki67_synthetic import grid_of_nuclei


def _view(name: str) -> np.ndarray:
    return overview(open_slide(PACKAGE_DATA / name))


@pytest.mark.parametrize("name", ["OS-1-detail_HE.ome.tif", "cmu-1-small-region.svs"])
def test_bundled_he_samples_are_refused_for_eosin(name):
    check = check_hdab(_view(name))
    assert not check.ok and not check.verified
    assert check.reason.startswith("eosin"), check.reason


def test_bundled_ki67_sample_is_accepted():
    check = check_hdab(_view("OS-2-ndpi_Ki67.ome.tif"))
    assert check.ok and check.verified and check.reason == ""
    # DAB, not eosin, is the second stain; almost no pink pixels; H + DAB explain the OD.
    assert check.second_stain_to_dab_deg < check.second_stain_to_eosin_deg
    assert check.eosin_pixel_fraction < 0.05 and check.unexplained_fraction < 0.1


def test_greyscale_and_foreign_stains_are_refused():
    ki67 = _view("OS-2-ndpi_Ki67.ome.tif")
    grey = np.repeat(ki67.mean(axis=-1, keepdims=True).astype(np.uint8), 3, axis=-1)
    check = check_hdab(grey)
    assert not check.ok and check.reason.startswith("greyscale")
    # A green-absorbing "stain" that neither hematoxylin nor DAB can make (OD along -residual
    # plus red): e.g. a methyl-green or a colour cast.
    od = np.zeros(ki67.shape[:2] + (3,))
    yy, xx = np.mgrid[: ki67.shape[0], : ki67.shape[1]]
    blob = ((yy // 40 + xx // 40) % 2) == 0
    od[blob] = (0.9, 0.05, 0.05)  # absorbs red only: cyan tissue
    cyan = np.clip(240 * 10 ** (-od), 0, 255).astype(np.uint8)
    check = check_hdab(cyan)
    assert not check.ok and "unexplained" in check.reason, check.reason


def test_blank_glass_passes_with_a_note():
    check = check_hdab(np.full((64, 64, 3), 240, np.uint8))
    assert check.ok and "too little tissue" in check.reason


def test_pipeline_refuses_he_and_force_marks_results_unverified():
    he = _view("cmu-1-small-region.svs")[:512, :512]
    with pytest.raises(StainCheckError, match="eosin") as info:
        measure_rois(he, 0.5)
    assert "--force" in str(info.value)
    run = measure_rois(he, 0.5, force=True)
    assert not run.stain_verified and run.provenance["stain_check"]["verified"] is False
    (r,) = run.results
    assert r.bin is None and r.who_grade is None
    assert r.no_grade_reason.startswith(UNVERIFIED)
    # A flip recounts but keeps the result unverified.
    m = run.measurements[0]
    if len(m.nuclei):
        flipped = m.flip(int(m.nuclei.label[0])).result
        assert flipped.who_grade is None and flipped.no_grade_reason.startswith(UNVERIFIED)


def test_synthetic_hdab_is_verified_through_the_pipeline():
    syn = grid_of_nuclei()
    run = measure_rois(syn.rgb, 0.5, [ROI.rectangle("all", 0, 0, 128, 128)])
    assert run.stain_verified and run.stain_check.ok


def test_the_check_looks_at_the_rois_not_at_pink_outside_them():
    from napari_virtualstain.core.deconvolution import QUPATH_HE
    from tests.support.ki67_synthetic import GLASS_RGB

    syn = grid_of_nuclei(n_rows=8, n_cols=16)
    rgb = syn.rgb.copy()
    pink = np.asarray(GLASS_RGB) * 10 ** (-0.6 * QUPATH_HE.array[1])  # eosin stroma
    rgb[:, 128:] = np.round(pink).astype(np.uint8)
    with pytest.raises(StainCheckError, match="eosin"):
        measure_rois(rgb, 0.5)
    run = measure_rois(rgb, 0.5, [ROI.rectangle("nuclei", 0, 0, 128, 60)])
    assert run.stain_verified and run.results[0].n_nuclei > 0
