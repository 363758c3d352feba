"""One export policy for the widget and the CLI, and the run-level hot spot, with ROIs too large
to keep a label image (the case that crashed the widget's hot-spot search)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from napari_virtualstain.core.geojson import read_geojson
from napari_virtualstain.core.ki67 import (
    find_run_hotspot,
    pipeline,
    write_run_csv,
    write_run_geojson,
    write_run_json,
    write_run_labels,
)
from napari_virtualstain.core.ki67.export import JSON_KEYS
from napari_virtualstain.core.roi import ROI
from tests.support.ki67_synthetic import grid_of_nuclei

ROIS = [ROI.rectangle("top", 0, 0, 64, 128), ROI.rectangle("all", 0, 0, 128, 128)]


@pytest.fixture(scope="module")
def syn():
    return grid_of_nuclei(n_rows=8, n_cols=8, positive_fraction=0.5, seed=7)


@pytest.fixture(scope="module")
def runs(syn):
    kept = pipeline.measure_rois(syn.rgb, 0.5, ROIS)
    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline, "MAX_LABEL_PIXELS", 100)  # every ROI is "too large" now
    try:
        big = pipeline.measure_rois(syn.rgb, 0.5, ROIS)
    finally:
        mp.undo()
    return kept, big


def test_hot_spot_without_label_images_matches_the_one_with(runs):
    kept, big = runs
    assert all(m.labels is None for m in big.measurements)
    a, b = find_run_hotspot(kept, 80.0), find_run_hotspot(big, 80.0)
    assert a is not None and b is not None
    assert (b.y_um, b.x_um, b.n_nuclei, b.n_positive) == (a.y_um, a.x_um, a.n_nuclei, a.n_positive)
    # The window lies inside an ROI and the index is its own count.
    assert b.labelling_index == pytest.approx(b.n_positive / b.n_nuclei)
    assert 0 <= b.y_um and b.y_um + 80 <= 128 and 0 <= b.x_um and b.x_um + 80 <= 128
    assert find_run_hotspot(big, 500.0) is None  # no window fits inside the ROIs


def test_one_policy_for_rois_too_large_to_outline(tmp_path, runs):
    kept, big = runs
    skipped = write_run_geojson(tmp_path / "big.geojson", big)
    assert skipped == ["top", "all"]
    objs = read_geojson(tmp_path / "big.geojson", 0.5)
    assert [r.name for r in objs.rois] == ["top", "all"] and objs.detections == []
    assert write_run_geojson(tmp_path / "kept.geojson", kept) == []
    n_kept = sum(len(m.nuclei) for m in kept.measurements)
    assert len(read_geojson(tmp_path / "kept.geojson", 0.5).detections) == n_kept
    # A label image needs every ROI: refused with their names, nothing written.
    with pytest.raises(ValueError, match="too large"):
        write_run_labels(tmp_path / "big.tif", big)
    assert not (tmp_path / "big.tif").exists()
    write_run_labels(tmp_path / "kept.tif", kept)
    # CSV and JSON hold every ROI either way.
    nuc, rois = write_run_csv(tmp_path / "n.csv", tmp_path / "r.csv", big)
    rows = list(csv.DictReader(io.StringIO(rois.read_text())))
    assert [r["name"] for r in rows] == ["top", "all"]
    assert len(nuc.read_text().splitlines()) == 1 + n_kept
    doc = json.loads(write_run_json(tmp_path / "r.json", big).read_text())
    assert [list(r)[: len(JSON_KEYS)] for r in doc["rois"]] == [list(JSON_KEYS)] * 2
    assert doc["provenance"]["stain_check"]["verified"] is True
