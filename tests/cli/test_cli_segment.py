"""``virtualstain segment``: nuclei of a synthetic tile with known truth, in one block and many."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from napari_virtualstain.cli import main
from napari_virtualstain.core.geojson import read_geojson
from tests.support.ki67_synthetic import grid_tile_png


@pytest.fixture
def tile(tmp_path):
    return grid_tile_png(tmp_path / "tile.png", n_rows=8, n_cols=8, positive_fraction=0.5, seed=2)


def _run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_segment_writes_labels_csv_and_geojson(tmp_path, tile):
    path, syn = tile
    out = {k: tmp_path / f"nuclei.{k}" for k in ("tif", "csv", "geojson")}
    result = _run([
        "segment", str(path), "--mpp", "0.5", "--quiet", "--labels-out", str(out["tif"]),
        "--csv", str(out["csv"]), "--geojson-out", str(out["geojson"]),
    ])  # fmt: skip
    assert "64 nuclei" in result.output
    labels = tifffile.imread(out["tif"])
    assert labels.shape == syn.rgb.shape[:2] and labels.dtype == np.uint32
    with open(out["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 64 == len(np.unique(labels)) - 1
    # Each row's centroid lies on a true nucleus and its area is that nucleus' area (±25 %).
    centres = np.array([[float(r["y_px"]), float(r["x_px"])] for r in rows])
    dist = np.linalg.norm(centres[:, None] - syn.centres_px[None], axis=-1)
    assert dist.min(axis=1).max() < 2.0
    true_area = np.pi * syn.radii_px[dist.argmin(axis=1)] ** 2
    areas = np.array([float(r["area_px"]) for r in rows])
    assert np.allclose(areas, true_area, rtol=0.25)
    assert float(rows[0]["area_um2"]) == pytest.approx(float(rows[0]["area_px"]) * 0.25, rel=1e-3)
    # The labels image and the table agree: label id -> its pixel count.
    counts = np.bincount(labels.ravel())
    assert all(counts[int(r["label"])] == int(r["area_px"]) for r in rows)
    desc = json.loads(tifffile.TiffFile(out["tif"]).pages[0].description)
    assert desc["mpp"] == 0.5 and desc["segmenter"] == "learned"  # the default
    objs = read_geojson(out["geojson"], 0.5)
    assert len(objs.detections) == 64 and not objs.rois
    assert {d.object_type for d in objs.detections} == {"detection"}


def test_segment_in_blocks_counts_each_nucleus_once(tmp_path):
    path, _ = grid_tile_png(tmp_path / "big.png", n_rows=20, n_cols=20, seed=5)  # 640 x 640 px
    csv_out = tmp_path / "n.csv"
    _run(["segment", str(path), "--mpp", "0.5", "--quiet", "--tile-px", "256",
          "--csv", str(csv_out)])  # fmt: skip
    with open(csv_out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 400
    assert len({r["label"] for r in rows}) == 400


def test_segment_needs_a_pixel_size_and_an_output(tmp_path, tile):
    path, _ = tile
    result = CliRunner().invoke(main, ["segment", str(path), "--csv", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "pass --mpp" in result.output  # a usage error
    result = CliRunner().invoke(main, ["segment", str(path), "--mpp", "0.5"])
    assert result.exit_code == 2 and "at least one output" in result.output
    assert not (tmp_path / "x.csv").exists()
