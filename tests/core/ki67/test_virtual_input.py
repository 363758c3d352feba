"""A ratio measured on a virtual stain says so, and gives no grade unless its model may."""

from __future__ import annotations

import pytest

from napari_virtualstain.core.ki67.pipeline import measure_rois
from napari_virtualstain.core.ki67.virtual_input import (
    mark_virtual,
    read_provenance,
    virtual_input,
)
from napari_virtualstain.core.models.card import ModelCard
from tests.support.ki67_synthetic import grid_of_nuclei

SHA = "ab" * 32
DEMO = ModelCard(
    name="m", arch="paper", sha256=SHA, notes="DEMONSTRATION MODEL - NOT FOR DIAGNOSIS."
)
CLINICAL = ModelCard(name="m", arch="paper", sha256=SHA, notes="validated on 400 slides")
PROV = {"model": {"name": "m", "sha256": SHA, "direction": "he->ki67"}}


@pytest.fixture(scope="module")
def gradable_run():
    syn = grid_of_nuclei(23, 23, positive_fraction=0.5, seed=4)  # 529 nuclei: graded
    run = measure_rois(syn.rgb, 0.5)
    assert run.results[0].graded
    return run


def test_a_real_stain_is_not_virtual(tmp_path):
    assert virtual_input(None) is None and virtual_input({"software": "x"}) is None
    assert read_provenance(tmp_path / "slide.ome.tif") is None


def test_the_card_decides_whether_a_grade_is_given():
    demo = virtual_input(PROV, cards=[DEMO])
    assert not demo.for_diagnosis and "not for diagnosis" in demo.reason
    assert virtual_input(PROV, cards=[CLINICAL]).for_diagnosis
    unknown = virtual_input(PROV, cards=[])
    assert not unknown.for_diagnosis and "not on this machine" in unknown.reason
    # The same name with other weights is another model: its card does not speak for these.
    other = ModelCard(name="m", arch="paper", sha256="cd" * 32, notes="validated")
    assert not virtual_input(PROV, cards=[other]).for_diagnosis
    forced = {**PROV, "source_stain_check": {"ok": False, "forced": True}}
    assert "--force" in virtual_input(forced, cards=[CLINICAL]).reason


def test_no_grade_for_a_demo_model_and_a_label_always(gradable_run):
    marked = mark_virtual(gradable_run, virtual_input(PROV, cards=[DEMO]))
    (r,) = marked.results
    assert r.bin is None and r.who_grade is None
    assert r.no_grade_reason.startswith("virtual stain (model m)")
    assert r.labelling_index == gradable_run.results[0].labelling_index
    # A nucleus flipped by hand afterwards keeps the note: still no grade.
    m = marked.measurements[0]
    assert m.flip(int(m.nuclei.label[0])).result.who_grade is None
    assert marked.provenance["virtual_stain"]["for_diagnosis"] is False
    (kept,) = mark_virtual(gradable_run, virtual_input(PROV, cards=[CLINICAL])).results
    assert kept.who_grade == gradable_run.results[0].who_grade
    assert any("virtual stain (model m)" in w for w in kept.warnings)


def test_provenance_is_read_from_an_ome_zarr(tmp_path):
    from napari_virtualstain.core.io import write_ome_zarr

    rgb = grid_of_nuclei(2, 2).rgb
    path = write_ome_zarr(tmp_path / "v.zarr", rgb, mpp=0.5, metadata=PROV)
    assert read_provenance(path)["model"]["name"] == "m"
