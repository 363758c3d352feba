"""Δ vs real: only for a pair declared in provenance, and only on the same region."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_virtualstain.core.ki67 import declared_real, is_virtual, same_region_differences
from napari_virtualstain.core.ki67.pipeline import measure_rois
from napari_virtualstain.core.ki67.stain_check import StainCheck
from napari_virtualstain.core.roi import ROI
from tests.support.ki67_synthetic import grid_of_nuclei

VS = {"model": {"name": "demo-he2ki67"}, "source": {"path": "/slides/he.svs"}}


def test_declared_pairs_come_from_provenance_not_names():
    layers = {
        "ki67": {"slide_path": "/slides/ki67.svs"},
        "virtual ki67": {},  # a name is not a declaration
        "he": {"slide_path": "/slides/he.svs"},
        "overlay": {"virtualstain": VS, "source_layer": "he"},
        "registered": {"virtualstain": VS, "registered_to": "ki67"},
    }
    assert not is_virtual(layers["virtual ki67"]) and declared_real("virtual ki67", layers) is None
    assert declared_real("registered", layers) == "ki67"
    assert declared_real("overlay", layers) == "he"  # the real layer it was made from
    # A real layer may name the virtual one it was registered to.
    layers["ki67 (registered)"] = {"registered_to": "overlay"}
    assert declared_real("overlay", layers) == "ki67 (registered)"
    # Found by its provenance's source slide when the source layer has another name.
    layers2 = {"he slide": {"slide_path": "/slides/he.svs"}, "v": {"virtualstain": VS}}
    assert declared_real("v", layers2) == "he slide"
    assert declared_real("ki67", layers) is None  # a real layer has no "real" pair


def test_differences_only_on_the_same_region():
    real = grid_of_nuclei(positive_fraction=0.5, seed=1)
    virtual = grid_of_nuclei(positive_fraction=0.25, seed=2)
    rois = [ROI.rectangle("a", 0, 0, 64, 128), ROI.rectangle("b", 64, 0, 64, 128)]
    moved = [rois[0], ROI.rectangle("b", 64, 10, 64, 118)]  # "b" redrawn elsewhere
    r, v = measure_rois(real.rgb, 0.5, rois), measure_rois(virtual.rgb, 0.5, moved)
    d = same_region_differences(r, v)
    assert list(d) == ["a"]
    assert d["a"] == pytest.approx(v.results[0].labelling_index - r.results[0].labelling_index)
    # In a shared (world) frame: image µm differ by a registration shift, the world matches.
    shift = np.array([8.0, 0.0])
    world_r = {m.roi.name: m.roi.polygon_um() for m in r.measurements}
    world_v = {m.roi.name: m.roi.polygon_um() + shift for m in v.measurements}
    assert same_region_differences(r, v, world_r, world_v) == {}
    world_v = {k: p - shift for k, p in world_v.items()}
    assert list(same_region_differences(r, v, world_r, world_v)) == ["a"]


def test_no_difference_against_a_stain_that_failed_its_check():
    real = grid_of_nuclei(positive_fraction=0.5, seed=1)
    virtual = grid_of_nuclei(positive_fraction=0.25, seed=2)
    rois = [ROI.rectangle("a", 0, 0, 64, 128)]
    r, v = measure_rois(real.rgb, 0.5, rois), measure_rois(virtual.rgb, 0.5, rois)
    assert list(same_region_differences(r, v)) == ["a"]
    refused = StainCheck(False, "looks like H&E (eosin)", 10_000, forced=True)
    # An H&E measured anyway as the "real" side (the virtual Ki-67's source layer), or the
    # virtual side: no Δ either way.
    assert same_region_differences(replace(r, stain_check=refused), v) == {}
    assert same_region_differences(r, replace(v, stain_check=refused)) == {}
