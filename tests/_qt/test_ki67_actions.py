"""The Ki-67 dock's ROI import: QuPath holes stay left out of the ratio (Exclude)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.docks import plugin_dock


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    rgb = np.full((256, 256, 3), 230, np.uint8)
    viewer.add_image(rgb, rgb=True, name="ki67", scale=(0.5, 0.5), metadata={"mpp": 0.5})
    return viewer, plugin_dock(viewer, "Ki-67")


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _write(path, rings_by_name):
    """QuPath-style annotations, level-0 pixel [x, y] rings: outline first, then holes."""
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": {"objectType": "annotation", "name": name},
        }
        for name, rings in rings_by_name.items()
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_holes_go_to_their_own_layer_and_stay_left_out_of_the_ratio(dock, tmp_path):
    viewer, widget = dock
    path = _write(tmp_path / "necrosis.geojson", {
        "tumour": [_square(0, 0, 200, 200), _square(80, 80, 120, 120), _square(20, 20, 40, 60)],
        "stroma": [_square(210, 0, 250, 100)],
    })  # fmt: skip
    shapes = widget.import_rois(path)
    assert len(shapes.data) == 2  # outlines only: napari shapes cannot hold holes
    holes = viewer.layers[f"{shapes.name} holes"]
    assert len(holes.data) == 2 and list(holes.features["name"]) == [
        "tumour hole 1",
        "tumour hole 2",
    ]
    # the second hole, x 20..40 and y 20..60 px, as napari (y, x) with pixel centres on integers
    second = np.asarray(holes.data[1])
    assert second.min(axis=0) == pytest.approx([19.5, 19.5])
    assert second.max(axis=0) == pytest.approx([59.5, 39.5])
    assert tuple(holes.scale) == tuple(viewer.layers["ki67"].scale)
    # the ROIs are the outlines, the holes layer is chosen under Exclude
    assert widget.shapes_combo.currentText() == shapes.name
    assert widget.exclude_combo.currentText() == holes.name
    text = widget.status.text()
    assert "2 hole(s) of tumour" in text and holes.name in text and "left out" in text
    from napari_virtualstain.core.ki67 import Ki67Config

    *_, rois, _ = widget._inputs(Ki67Config)
    areas = {r.name: r.area_um2 for r in rois}  # µm² at 0.5 µm/px: 0.25 µm² a pixel
    assert areas["tumour"] == pytest.approx(0.25 * (200 * 200 - 40 * 40 - 20 * 40), rel=1e-6)
    assert areas["stroma"] == pytest.approx(0.25 * 40 * 100, rel=1e-6)  # untouched


def test_rois_without_holes_add_no_holes_layer(dock, tmp_path):
    viewer, widget = dock
    path = _write(tmp_path / "plain.geojson", {"tumour": [_square(0, 0, 200, 200)]})
    shapes = widget.import_rois(path)
    assert [ly.name for ly in viewer.layers] == ["ki67", shapes.name]
    assert "hole" not in widget.status.text() and "1 ROI(s) imported" in widget.status.text()
