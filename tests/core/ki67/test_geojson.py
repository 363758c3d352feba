"""QuPath GeoJSON: our round trip, and files in the layouts QuPath writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_virtualstain.core.geojson import (
    nuclei_features,
    read_geojson,
    roi_features,
    write_geojson,
)
from napari_virtualstain.core.ki67.pipeline import measure_rois
from napari_virtualstain.core.roi import ROI
from tests.support.ki67_synthetic import grid_of_nuclei


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


def _square(x0, y0, side):
    return [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]


def qupath_cell(x0, y0, cls, dab, object_key="objectType", object_type="cell"):
    """A cell as QuPath writes it (its GeoJSON type adapter): ``nucleusGeometry`` beside
    ``geometry`` at Feature level, the type in ``properties`` (``object_type`` in 0.3)."""
    return {
        "type": "Feature",
        "id": f"cell-{x0}-{y0}",
        "geometry": {"type": "Polygon", "coordinates": [_square(x0 - 4, y0 - 4, 16)]},
        "nucleusGeometry": {"type": "Polygon", "coordinates": [_square(x0, y0, 8)]},
        "properties": {
            object_key: object_type,
            "classification": {"name": cls, "color": [200, 50, 50]},
            "isLocked": False,
            "measurements": {
                "Nucleus: Area µm^2": 64 * 0.25,
                "Nucleus: DAB OD mean": dab,
                "Cell: Area µm^2": 256 * 0.25,
            },
        },
    }


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
            "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 20)]},
            "nucleusGeometry": {"type": "Polygon", "coordinates": [_square(5, 5, 4)]},
            "properties": {
                "objectType": "cell",
                "classification": {"name": "Negative", "color": [112, 112, 225]},
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


def qupath_cell_export(n_pos=7, n_neg=13):
    """A QuPath 0.4+ "Export objects as GeoJSON" of an annotation and its positive-cell detection."""
    annotation = {
        "type": "Feature",
        "id": "a0",
        "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 400)]},
        "properties": {
            "objectType": "annotation",
            "name": "Tumour",
            "classification": {"name": "Tumor", "color": [200, 0, 0]},
            "measurements": {"Num Detections": n_pos + n_neg, "Num Positive": n_pos},
        },
    }
    cells = [qupath_cell(20 + 30 * i, 40, "Positive", 0.4) for i in range(n_pos)]
    cells += [qupath_cell(20 + 30 * i, 200, "Negative", 0.05) for i in range(n_neg)]
    return {"type": "FeatureCollection", "features": [annotation, *cells]}


def test_real_format_qupath_cell_export(tmp_path):
    path = tmp_path / "cells.geojson"
    path.write_text(json.dumps(qupath_cell_export()))
    objs = read_geojson(path, 0.5)
    # One ROI (the annotation), 20 detections (the cells), none of them taken as ROIs.
    assert [r.name for r in objs.rois] == ["Tumour"]
    assert objs.rois[0].area_um2 == pytest.approx(400 * 400 * 0.25)
    assert len(objs.detections) == 20
    assert {d.object_type for d in objs.detections} == {"cell"}
    assert [d.classification for d in objs.detections].count("Positive") == 7
    # Each cell is read by its 8x8 nucleus, not its 16x16 cell outline.
    assert {d.area_px for d in objs.detections} == {64.0}
    first = objs.detections[0]
    assert first.centroid_px == pytest.approx((44.0, 24.0))
    assert first.measurements["Nucleus: DAB OD mean"] == 0.4


def test_qupath_03_object_type_and_child_objects():
    """QuPath 0.3 spells the type ``object_type``; children nest under ``childObjects``."""
    cells = [qupath_cell(10 * i, 0, "Positive", 0.3, object_key="object_type") for i in range(3)]
    for c in cells:  # 0.3 writes measurements as name/value lists
        c["properties"]["measurements"] = [{"name": "Nucleus: DAB OD mean", "value": 0.3}]
    tile = qupath_cell(90, 90, "Negative", 0.0, object_key="object_type", object_type="tile")
    parent = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 200)]},
        "properties": {"object_type": "annotation", "name": "Core A", "childObjects": cells},
    }
    objs = read_geojson([parent, tile], 1.0)
    assert [r.name for r in objs.rois] == ["Core A"]
    assert [d.object_type for d in objs.detections] == ["cell"] * 3 + ["tile"]
    assert [d.parent for d in objs.detections] == ["Core A"] * 3 + [""]
    assert objs.detections[0].measurements == {"Nucleus: DAB OD mean": 0.3}
    # A tile has no nucleus: it is read by its own outline (16 x 16).
    assert objs.detections[-1].area_px == 256.0


def test_classification_as_name_or_object():
    feats = [qupath_cell(0, 0, "x", 0.1) for _ in range(3)]
    feats[0]["properties"]["classification"] = "Positive"
    feats[1]["properties"]["classification"] = {"names": ["Tumor", "Positive"], "color": [1, 2, 3]}
    del feats[2]["properties"]["classification"]
    objs = read_geojson({"type": "FeatureCollection", "features": feats}, 1.0)
    assert [d.classification for d in objs.detections] == ["Positive", "Tumor: Positive", None]


def test_holes_multipolygons_and_invalid_outlines():
    holed = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 100), _square(20, 20, 10)]},
        "properties": {"objectType": "annotation", "name": "with hole"},
    }
    # A bow tie (self-intersecting) nucleus: shapely makes it two valid triangles of 25 px² each.
    bowtie = qupath_cell(0, 0, "Positive", 0.5)
    bowtie["nucleusGeometry"]["coordinates"] = [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]
    two_part = qupath_cell(0, 0, "Negative", 0.1)
    two_part["nucleusGeometry"] = {
        "type": "MultiPolygon",
        "coordinates": [[_square(0, 0, 4)], [_square(10, 10, 2)]],
    }
    objs = read_geojson([holed, bowtie, two_part], 0.5)
    (roi,) = objs.rois
    assert roi.area_um2 == pytest.approx((100 * 100 - 10 * 10) * 0.25)  # the hole is left out
    assert roi.mask(0.5, (0, 0), (100, 100)).sum() == 100 * 100 - 10 * 10
    assert any("1 hole(s) (25 µm²) left out" in n for n in objs.notes)
    assert objs.detections[0].area_px == pytest.approx(50.0)
    assert objs.detections[1].area_px == pytest.approx(20.0)
    assert len(objs.detections[1].polygon_px) == 4  # the larger part's outline


def test_holes_round_trip_and_multipolygons_are_noted(tmp_path):
    holed = ROI.polygon("necrosis out", [(0, 0), (0, 50), (50, 50), (50, 0)],
                        [[(10, 10), (10, 20), (20, 20), (20, 10)]])  # fmt: skip
    path = write_geojson(tmp_path / "holed.geojson", roi_features([holed], 0.5))
    ring_counts = [
        len(f["geometry"]["coordinates"]) for f in json.loads(path.read_text())["features"]
    ]
    assert ring_counts == [2]  # outline + one interior ring, as QuPath writes holes
    (back,) = read_geojson(path, 0.5).rois
    assert back.area_um2 == pytest.approx(50 * 50 - 10 * 10)
    objs = read_geojson(QUPATH_04_COLLECTION, 1.0)
    assert any("'Region*' has 2 separate parts" in n for n in objs.notes)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "FeatureCollection", "features": [1, 2]}, "feature 0 is a int, not a GeoJSON"),
        (["a", "b"], "feature 0 is a str"),
        ({"type": "FeatureCollection", "features": {"a": 1}}, "must be a list"),
        (
            [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[["1", "2"]]]}}],
            "coordinates must be numbers",
        ),
        (
            [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[1, 2], [3]]]}}],
            "ragged coordinates",
        ),
        (
            [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": "0,0,1,1"}}],
            "coordinates must be a list",
        ),
        ([{"type": "Feature", "properties": {"childObjects": 3}}], "'childObjects' must be a list"),
    ],
)
def test_malformed_geojson_names_the_problem(tmp_path, data, message):
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as err:
        read_geojson(path, 0.5)
    assert "bad.geojson" in str(err.value)
