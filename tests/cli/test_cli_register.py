"""``virtualstain register``: a real tissue section and a rotated, shifted copy of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from napari_virtualstain.cli import main
from napari_virtualstain.core.registration import Registration
from tests.support import PACKAGE_DATA

MPP = 0.998  # CMU-1 small region at half resolution


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """FIXED: CMU-1 (real tissue); MOVING: it turned 90° counter-clockwise (np.rot90)."""
    folder = tmp_path_factory.mktemp("pair")
    fixed = tifffile.imread(PACKAGE_DATA / "cmu-1-small-region.svs")[::4, ::4].copy()
    moving = np.rot90(fixed).copy()
    paths = []
    for name, img in (("fixed", fixed), ("moving", moving)):
        path = folder / f"{name}.ome.tif"
        meta = {"axes": "YXS", "PhysicalSizeX": 2 * MPP, "PhysicalSizeY": 2 * MPP}
        tifffile.imwrite(path, img, ome=True, photometric="rgb", metadata=meta)
        paths.append(path)
    return paths[0], paths[1], fixed.shape[:2]


def test_register_writes_transform_and_maps_geojson(tmp_path, pair):
    fixed, moving, (h, w) = pair
    # A triangle drawn on MOVING (QuPath [x, y] level-0 pixels).
    tri = [[100.0, 50.0], [160.0, 50.0], [130.0, 120.0], [100.0, 50.0]]
    annotations = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [tri]},
                      "properties": {"objectType": "annotation", "name": "tumour"}}],
    }  # fmt: skip
    geo_in = tmp_path / "on_moving.geojson"
    geo_in.write_text(json.dumps(annotations))
    out, geo_out = tmp_path / "t.json", tmp_path / "on_fixed.geojson"
    result = CliRunner().invoke(main, [
        "register", str(moving), str(fixed), "--out", str(out), "--rigid", "--quiet",
        "--geojson", str(geo_in), "--geojson-out", str(geo_out),
    ], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    reg = Registration.load(out)
    assert reg.score > 0.5
    mapped = json.loads(geo_out.read_text())["features"][0]
    assert mapped["properties"]["name"] == "tumour"
    got = np.array(mapped["geometry"]["coordinates"][0])
    # moving[i, j] = fixed[j, w - 1 - i]: moving [x=j, y=i] -> fixed [x=w-1-i, y=j].
    want = np.array([[w - 1 - y, x] for x, y in tri])
    assert np.abs(got - want).max() < 4.0  # px at 2 µm/px


def test_register_refuses_bad_geojson_before_working(tmp_path, pair):
    fixed, moving, _ = pair
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [[1, 2]]}))
    out = tmp_path / "t.json"
    result = CliRunner().invoke(main, [
        "register", str(moving), str(fixed), "--out", str(out),
        "--geojson", str(bad), "--geojson-out", str(tmp_path / "o.geojson"),
    ])  # fmt: skip
    assert result.exit_code == 1 and "bad.geojson" in result.output
    assert "not a GeoJSON Feature" in result.output and not out.exists()
    result = CliRunner().invoke(main, ["register", str(moving), str(fixed), "--out", str(fixed)])
    assert result.exit_code == 1 and "refusing to overwrite" in result.output
