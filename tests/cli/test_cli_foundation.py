import json

import pytest
from click.testing import CliRunner

from napari_virtualstain.cli import main


def test_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "info" in result.output and "demo" in result.output


def test_info_prints_levels_mpp_and_chunks(sample_paths):
    result = CliRunner().invoke(main, ["info", "--json", *map(str, sample_paths.values())])
    assert result.exit_code == 0, result.output
    summaries = {s["name"]: s for s in json.loads(result.output)}
    assert summaries["cmu-1-small-region"]["mpp"] == 0.499
    assert summaries["OS-2-ndpi_Ki67"]["levels"][0]["chunks_px"] == [512, 512]


def test_info_fails_clearly_on_missing_file(tmp_path):
    result = CliRunner().invoke(main, ["info", str(tmp_path / "missing.svs")])
    assert result.exit_code == 1
    assert "missing.svs" in result.output and "no such file" in result.output


@pytest.mark.slow
def test_headless_demo_writes_outputs(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--mode", "headless", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "OS-1-detail_HE.ome.zarr" / ".zattrs").exists()
    assert (out / "OS-2-ndpi_Ki67_thumbnail.png").exists()
    summary = json.loads((out / "slides.json").read_text())
    assert summary["he"]["mpp"] > 0.2
    assert str(out.resolve()) in result.output
    # Virtual stains with the shipped pair, with provenance in the OME-Zarr attributes.
    attrs = json.loads((out / "OS-1-detail_HE.virtual-ki67.ome.zarr" / ".zattrs").read_text())
    assert "demo-he2ki67" in json.dumps(attrs["napari_virtualstain"])
    assert (out / "OS-2-ndpi_Ki67.virtual-he.ome.zarr" / ".zattrs").exists()
    # The ratio on the real and the virtual stain, and by seed 003's route.
    ratio = json.loads((out / "ratio.json").read_text())
    assert len(ratio) == 3
    for entry in ratio.values():
        assert entry["n_nuclei"] > 100
        assert 0.0 <= entry["labelling_index"] <= 1.0
        # Fewer than 500 nuclei (the virtual Ki-67 of the small H&E crop): no bin, a reason.
        assert entry["bin"] in ("0-0.2", "0.2-0.5", "0.5-1") or entry["no_grade_reason"]
    qa = json.loads((out / "qa.json").read_text())
    assert 0.0 < qa["ssim"] < 1.0 and qa["psnr_db"] > 10
