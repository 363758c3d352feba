"""QuPath GeoJSON: our round trip, and files in the layouts QuPath writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _ki67_synthetic import grid_of_nuclei

from napari_virtualstain.core.geojson import (
    nuclei_features,
    read_geojson,
    roi_features,
    write_geojson,
)
from napari_virtualstain.core.ki67_pipeline import measure_rois
from napari_virtualstain.core.roi import ROI


def test_roi_round_trip(tmp_path):
    rois = [
        ROI.rectangle("tumour", 10.0, 20.0, 30.0, 40.0),
        ROI.ellipse("hot spot", 50.0, 60.0, 20.0, 30.0),
        ROI.polygon("edge", [(5, 5), (5, 80), (70, 40)]),
    ]
    path = write_geojson(tmp_path / "rois.geojson", roi_features(rois, 0.25))
    back = read_geojson(path, 0.25).rois
    assert [r.name for r in back] == ["tumour", "hot spot", "edge"]
    for a, b in zip(rois, back, strict=True):
        assert b.area_um2 == pytest.approx(a.area_um2, rel=3e-3)
        np.testing.assert_allclose(b.bbox_um(), a.bbox_um(), atol=0.01)
    raw = json.loads(path.read_text())
    assert raw["type"] == "FeatureCollection"
    props = raw["features"][0]["properties"]
    assert props["objectType"] == "annotation" and props["name"] == "tumour"
    # QuPath coordinates: [x, y] level-0 pixels, closed rings.
    ring = raw["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and ring[1] == [240.0, 40.0]


def test_nuclei_round_trip_as_detections(tmp_path):
    syn = grid_of_nuclei(n_rows=4, n_cols=4)
    run = measure_rois(syn.rgb, 0.5)
    m = run.measurements[0]
    feats = roi_features([m.roi], 0.5, run.results)
    feats += nuclei_features(m.labels, m.nuclei, m.origin_px)
    back = read_geojson(write_geojson(tmp_path / "all.geojson", feats), 0.5)
    assert len(back.rois) == 1 and len(back.detections) == 16
    classes = [d.classification for d in back.detections]
    assert classes.count("Positive") == int(m.nuclei.positive.sum())
    assert set(classes) <= {"Positive", "Negative"}
    # Outlines sit on the nuclei: each detection's centre is within 0.5 px of a measured one
    # (QuPath's pixel (i, j) spans [i, i + 1); ours is centred on (i, j)).
    centres = np.array([d.centroid_px for d in back.detections]) - 0.5
    measured = np.stack([m.nuclei.y, m.nuclei.x], 1)
    dists = np.linalg.norm(centres[:, None] - measured[None], axis=-1).min(axis=1)
    assert dists.max() < 0.5
    meas = back.detections[0].measurements
    assert "Nucleus: DAB OD mean" in meas and "Nucleus: Area µm^2" in meas


QUPATH_02_LIST = [
    {
        "type": "Feature",
        "id": "PathAnnotationObject",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[100, 200], [300, 200], [300, 400], [100, 400], [100, 200]]],
        },
        "properties": {
            "classification": {"name": "Tumor", "colorRGB": -3670016},
            "isLocked": False,
            "measurements": [],
        },
    },
    {
        "type": "Feature",
        "id": "PathDetectionObject",
        "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [14, 10], [14, 14], [10, 10]]]},
        "properties": {
            "classification": {"name": "Positive", "colorRGB": -3670016},
            "isLocked": False,
            "measurements": [
                {"name": "Nucleus: DAB OD mean", "value": 0.41},
                {"name": "Nucleus: Area µm^2", "value": 28.5},
            ],
        },
    },
]

QUPATH_04_COLLECTION = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "3f2a1b7c-0000-4000-8000-000000000001",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]],
                    [[[100, 100], [150, 100], [150, 150], [100, 100]]],
                ],
            },
            "properties": {"objectType": "annotation", "name": "Region*"},
        },
        {
            "type": "Feature",
            "id": "3f2a1b7c-0000-4000-8000-000000000002",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [20, 0], [20, 20], [0, 0]]]},
            "properties": {
                "objectType": "cell",
                "classification": {"name": "Negative", "color": [112, 112, 225]},
                "nucleusGeometry": {
                    "type": "Polygon",
                    "coordinates": [[[5, 5], [9, 5], [9, 9], [5, 9], [5, 5]]],
                },
                "measurements": {"Nucleus: DAB OD mean": 0.05},
            },
        },
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 4]}, "properties": {}},
    ],
}


def test_reads_qupath_02_feature_list(tmp_path):
    path = tmp_path / "qupath02.json"
    path.write_text(json.dumps(QUPATH_02_LIST))
    objs = read_geojson(path, 0.5)
    assert len(objs.rois) == 1 and objs.rois[0].name == "Tumor"
    assert objs.rois[0].area_um2 == pytest.approx(200 * 200 * 0.25)
    assert objs.rois[0].bbox_um() == pytest.approx((100.0, 50.0, 200.0, 150.0))
    (det,) = objs.detections
    assert det.classification == "Positive" and det.measurements["Nucleus: DAB OD mean"] == 0.41


def test_reads_qupath_04_collection_with_multipolygon_and_cells():
    objs = read_geojson(QUPATH_04_COLLECTION, 1.0)
    assert [r.name for r in objs.rois] == ["Region*", "Region* (2)"]
    (cell,) = objs.detections
    # A cell is read by its nucleus, not its whole outline.
    assert cell.centroid_px == pytest.approx((7.0, 7.0))
    assert cell.measurements == {"Nucleus: DAB OD mean": 0.05}


def test_bad_files_are_named(tmp_path):
    bad = tmp_path / "broken.geojson"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.geojson"):
        read_geojson(bad, 0.5)
    with pytest.raises(ValueError, match="not GeoJSON"):
        read_geojson({"features": []}, 0.5)
