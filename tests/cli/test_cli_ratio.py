"""``virtualstain ratio``: the contract other tools rely on, end to end on real files."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from napari_virtualstain.cli import main
from napari_virtualstain.core.geojson import read_geojson, roi_features, write_geojson
from napari_virtualstain.core.roi import ROI
from tests.support.ki67_synthetic import grid_tile_png

JSON_KEYS = {
    "name", "n_nuclei", "n_positive", "labelling_index", "area_ratio", "h_score", "bin",
    "who_grade", "nuclei_area_um2", "positive_area_um2",
}  # fmt: skip


@pytest.fixture
def tile(tmp_path):
    return grid_tile_png(tmp_path / "tile.png", n_rows=6, n_cols=6, positive_fraction=0.5, seed=4)


def test_whole_tile_with_all_outputs(tmp_path, tile):
    path, syn = tile
    out = {k: tmp_path / f"out.{k}" for k in ("json", "tif", "csv", "geojson")}
    result = CliRunner().invoke(
        main,
        [
            "ratio", str(path), "--mpp", "0.5", "--json", str(out["json"]),
            "--labels-out", str(out["tif"]), "--nuclei-csv", str(out["csv"]),
            "--geojson-out", str(out["geojson"]),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(out["json"].read_text())
    (roi,) = doc["rois"]
    assert JSON_KEYS <= set(roi)
    assert roi["n_nuclei"] == 36 and roi["n_positive"] == int(syn.positive.sum())
    assert roi["labelling_index"] == pytest.approx(0.5)
    assert doc["provenance"]["segmenter"] == "learned" and doc["provenance"]["mpp"] == 0.5
    import tifffile

    labels = tifffile.imread(out["tif"])
    assert labels.dtype == np.uint32 and labels.shape == syn.rgb.shape[:2]
    assert len(np.unique(labels)) == 37
    rows = list(csv.DictReader(io.StringIO(out["csv"].read_text())))
    assert list(rows[0])[:6] == ["label", "y", "x", "area_um2", "dab_od_mean", "positive"]
    assert len(rows) == 36 and {int(r["label"]) for r in rows} == set(
        np.unique(labels)[1:].tolist()
    )
    objs = read_geojson(out["geojson"], 0.5)
    assert len(objs.rois) == 1 and len(objs.detections) == 36


def test_rois_from_geojson_and_three_thresholds(tmp_path, tile):
    path, syn = tile
    rois = [ROI.rectangle("top", 0, 0, 48, 96), ROI.rectangle("bottom", 48, 0, 48, 96)]
    roi_file = write_geojson(tmp_path / "rois.geojson", roi_features(rois, 0.5))
    out_json = tmp_path / "r.json"
    args = ["ratio", str(path), "--mpp", "0.5", "--roi", str(roi_file), "--json", str(out_json)]
    args += [
        "--threshold",
        "0.2",
        "--threshold",
        "0.4",
        "--threshold",
        "0.6",
        "--stains",
        "estimate",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    top, bottom = json.loads(out_json.read_text())["rois"]
    assert (top["name"], bottom["name"]) == ("top", "bottom")
    assert top["n_nuclei"] == bottom["n_nuclei"] == 18
    assert top["n_positive"] == int(syn.positive[:18].sum())
    assert "top:" in result.output and "labelling index" in result.output


def test_errors_are_clear(tmp_path, tile):
    path, _ = tile
    runner = CliRunner()
    no_mpp = runner.invoke(main, ["ratio", str(path)])
    assert no_mpp.exit_code != 0 and "--mpp" in no_mpp.output
    missing = runner.invoke(main, ["ratio", str(tmp_path / "nope.png"), "--mpp", "0.5"])
    assert missing.exit_code != 0 and "nope.png" in missing.output
    before = path.read_bytes()
    clobber = runner.invoke(main, ["ratio", str(path), "--mpp", "0.5", "--json", str(path)])
    assert clobber.exit_code != 0 and "refusing to overwrite" in clobber.output
    assert path.read_bytes() == before
    far = write_geojson(
        tmp_path / "far.geojson", roi_features([ROI.rectangle("far", 900, 900, 9, 9)], 0.5)
    )
    outside = runner.invoke(main, ["ratio", str(path), "--mpp", "0.5", "--roi", str(far)])
    assert outside.exit_code != 0 and "'far'" in outside.output and "outside" in outside.output


@pytest.mark.slow
def test_stardist_backend_through_the_cli(tmp_path):
    """The real 2D_versatile_he architecture, with weights designed to find dark discs."""
    pytest.importorskip("torch")
    from tests.support.stardist_models import write_disc_model

    path, _ = grid_tile_png(
        tmp_path / "tile.png", n_rows=6, n_cols=6, positive_fraction=0.5, seed=4, jitter_radius=0.0
    )
    model = write_disc_model(tmp_path / "sd_model", radius_px=8.0, threshold=0.35)
    out = tmp_path / "sd.json"
    args = ["ratio", str(path), "--mpp", "0.5", "--segmenter", "stardist"]
    result = CliRunner().invoke(main, [*args, "--model-dir", str(model), "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["provenance"]["segmenter"] == "stardist"
    (roi,) = doc["rois"]
    assert roi["n_nuclei"] == 36 and roi["labelling_index"] == pytest.approx(0.5)


def test_he_sample_is_refused_naming_the_file_and_force_marks_it(tmp_path):
    from tests.support import PACKAGE_DATA

    he = PACKAGE_DATA / "OS-1-detail_HE.ome.tif"
    runner = CliRunner()
    refused = runner.invoke(main, ["ratio", str(he), "--json", str(tmp_path / "r.json")])
    assert refused.exit_code != 0
    assert str(he) in refused.output and "eosin" in refused.output and "--force" in refused.output
    assert not (tmp_path / "r.json").exists()
    forced = runner.invoke(main, ["ratio", str(he), "--force", "--json", str(tmp_path / "r.json")])
    assert forced.exit_code == 0, forced.output
    assert "stain not verified" in forced.output
    doc = json.loads((tmp_path / "r.json").read_text())
    (roi,) = doc["rois"]
    assert roi["bin"] is None and roi["who_grade"] is None
    assert roi["no_grade_reason"].startswith("stain not verified")
    assert doc["provenance"]["stain_check"]["verified"] is False


def test_too_few_nuclei_print_no_grade(tile):
    path, _ = tile
    result = CliRunner().invoke(main, ["ratio", str(path), "--mpp", "0.5"])
    assert result.exit_code == 0, result.output
    line = next(li for li in result.output.splitlines() if li.startswith("whole image:"))
    assert "no bin or grade: too few nuclei for grading (36 < 500)" in line
    assert "WHO" not in line and "G1" not in line and "G3" not in line


def _square_px(x0, y0, side):
    return [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]


def test_roi_holes_are_left_out_of_counts_and_area(tmp_path, tile):
    """A QuPath annotation with an interior ring: the ring's nuclei and area do not count."""
    path, syn = tile  # 6 x 6 nuclei, centres at 16 + 32 k px (0.5 µm/px), radius <= 10 px
    hole = _square_px(64, 64, 64)  # holds exactly the 4 central nuclei, whole
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [_square_px(0, 0, 192), hole]},
        "properties": {"objectType": "annotation", "name": "tumour"},
    }
    roi_file = tmp_path / "holed.geojson"
    roi_file.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    out = tmp_path / "r.json"
    args = ["ratio", str(path), "--mpp", "0.5", "--roi", str(roi_file), "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    (roi,) = doc["rois"]
    central = [2 * 6 + 2, 2 * 6 + 3, 3 * 6 + 2, 3 * 6 + 3]  # row-major nucleus indices
    assert roi["n_nuclei"] == 36 - 4
    assert roi["n_positive"] == int(syn.positive.sum() - syn.positive[central].sum())
    assert roi["roi_area_um2"] == pytest.approx((192**2 - 64**2) * 0.25)  # 8192 µm²
    assert "1 hole(s) (1024 µm²) left out" in result.output
    assert any("hole" in n for n in doc["roi_notes"])


def test_a_virtual_stain_of_a_demo_model_gets_no_grade(tmp_path):
    """Enough nuclei for a grade, but the provenance names the not-for-diagnosis demo model."""
    from napari_virtualstain.core.io import write_ome_zarr
    from napari_virtualstain.core.models.registry import find_model
    from tests.support.ki67_synthetic import grid_of_nuclei

    card = json.loads((find_model("demo-he2ki67") / "card.json").read_text())
    syn = grid_of_nuclei(23, 23, positive_fraction=0.5, seed=4)  # 529 nuclei: gradable
    model = {"name": card["name"], "sha256": card["sha256"], "direction": card["direction"]}
    image = write_ome_zarr(tmp_path / "virtual.zarr", syn.rgb, mpp=0.5, metadata={"model": model})
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["ratio", str(image), "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("VIRTUAL STAIN (model demo-he2ki67, he->ki67)")
    assert "not for diagnosis" in first
    line = next(li for li in result.output.splitlines() if li.startswith("whole image:"))
    assert "WHO" not in line and "G3" not in line and "virtual stain (model demo-he2ki67)" in line
    doc = json.loads(out.read_text())
    assert doc["virtual_stain"]["label"] == "virtual stain (model demo-he2ki67)"
    assert doc["virtual_stain"]["for_diagnosis"] is False
    (roi,) = doc["rois"]
    assert roi["n_nuclei"] == 529 and roi["bin"] is None and roi["who_grade"] is None
    assert roi["no_grade_reason"].startswith("virtual stain (model demo-he2ki67)")
    assert roi["labelling_index"] == pytest.approx(syn.labelling_index)  # the figures stay
