"""``virtualstain stain`` and ``stain_slide``: OME-Zarr out, provenance, resume, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support import PACKAGE_DATA
from tests.support.models import write_tiny_generator
from tests.support.slides import write_slide

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")
from click.testing import CliRunner  # noqa: E402

from napari_virtualstain.cli import main  # noqa: E402
from napari_virtualstain.core.engine.distributed import stain_slide  # noqa: E402
from napari_virtualstain.core.engine.lazy import open_virtual_stain  # noqa: E402
from napari_virtualstain.core.io import PROVENANCE_KEY, open_slide  # noqa: E402

DATA = PACKAGE_DATA


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_generator(tmp_path_factory.mktemp("models"), "tiny-cli")


def test_cli_writes_ome_zarr_with_provenance_equal_to_the_api(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    out = tmp_path / "virtual.zarr"
    res = CliRunner().invoke(main, ["stain", str(slide), "--model", str(model_dir),
                                    "--out", str(out), "--device", "cpu", "--precision", "fp32", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "background skipped" in res.output
    written = open_slide(out)
    assert written.levels[0].shape == (256, 320, 3)
    assert written.mpp == pytest.approx(0.25)
    attrs = json.loads((out / ".zattrs").read_text())
    prov = attrs[PROVENANCE_KEY]
    assert prov["model"]["name"] == "tiny-cli" and len(prov["model"]["sha256"]) == 64
    assert prov["plan"]["halo_px"] <= 60 and prov["device"] == "cpu"  # measured, or exact
    assert not list(tmp_path.glob("virtual.zarr.tiles*"))  # own scratch removed after success
    api = open_virtual_stain(open_slide(slide), str(model_dir), device="cpu", precision="fp32")
    np.testing.assert_array_equal(np.asarray(written.levels[0]), api.levels[0].compute())
    assert api.plan.halo_px == prov["plan"]["halo_px"]


def test_cli_refuses_overwriting_input_or_finished_output(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    runner = CliRunner()
    res = runner.invoke(main, ["stain", str(slide), "-m", str(model_dir), "-o", str(slide), "-q"])
    assert res.exit_code != 0 and "overwrite" in res.output
    out = tmp_path / "v.zarr"
    args = [
        "stain",
        str(slide),
        "-m",
        str(model_dir),
        "-o",
        str(out),
        "-q",
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]
    assert runner.invoke(main, args).exit_code == 0
    res = runner.invoke(main, args)
    assert res.exit_code != 0 and "already exists" in res.output
    assert tifffile.imread(slide).shape == (256, 320, 3)  # input untouched


def test_cli_asks_for_mpp_when_unknown(tmp_path, model_dir):
    slide = write_slide(tmp_path / "nompp.tif", mpp=None)
    args = ["stain", str(slide), "-m", str(model_dir), "-o", str(tmp_path / "o.zarr"), "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "--mpp" in res.output
    res = CliRunner().invoke(
        main, [*args, "--mpp", "0.25", "--device", "cpu", "--precision", "fp32"]
    )
    assert res.exit_code == 0, res.output


def test_interrupted_run_resumes_from_written_tiles(tmp_path, model_dir, monkeypatch):
    from napari_virtualstain.core.engine.stain import StainEngine

    slide = write_slide(tmp_path / "he.ome.tif")
    out = tmp_path / "v.zarr"
    real = StainEngine.stain_batch
    calls = []

    def dies_on_third_batch(self, tiles, cancel=None):
        calls.append(len(tiles))
        if len(calls) == 4:  # the first call stains the glass-colour tile
            raise KeyboardInterrupt("killed")
        return real(self, tiles, cancel)

    monkeypatch.setattr(StainEngine, "stain_batch", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        stain_slide(slide, str(model_dir), out, device="cpu", precision="fp32", batch_size=1,
                    tile_px=64)  # fmt: skip
    monkeypatch.undo()
    scratch = list(tmp_path.glob("v.zarr.tiles-*"))
    assert len(scratch) == 1  # kept for the resume
    _settle(scratch[0])  # a pool thread of the killed run may still be finishing its tile
    resumed = stain_slide(slide, str(model_dir), out, device="cpu", precision="fp32", batch_size=1,
                          tile_px=64)  # fmt: skip
    tissue = resumed.tiles_total - resumed.tiles_background
    # two batches finished before the crash (a third thread may have finished one more)
    assert 2 <= resumed.tiles_cached_before < tissue
    assert resumed.tiles_inferred == tissue - resumed.tiles_cached_before
    fresh = stain_slide(
        slide, str(model_dir), tmp_path / "fresh.zarr", device="cpu", precision="fp32", tile_px=64
    )
    assert fresh.tiles_inferred == tissue
    a = np.asarray(open_slide(out).levels[0])
    b = np.asarray(open_slide(tmp_path / "fresh.zarr").levels[0])
    np.testing.assert_array_equal(a, b)


def _settle(folder, quiet_s: float = 1.0, limit_s: float = 30.0) -> None:
    """Wait until no file is added under ``folder`` for ``quiet_s`` (at most ``limit_s``)."""
    import time

    start, last, seen = time.monotonic(), time.monotonic(), -1
    while time.monotonic() - start < limit_s:
        n = sum(1 for p in folder.rglob("*") if p.is_file())
        if n != seen:
            seen, last = n, time.monotonic()
        elif time.monotonic() - last >= quiet_s:
            return
        time.sleep(0.1)


def _ki67_slide(path):
    """Like ``write_slide``, but a corner of the OS-2 Ki-67 sample on glass."""
    ki67 = tifffile.imread(DATA / "OS-2-ndpi_Ki67.ome.tif")
    rgb = np.full((256, 320, 3), 248, np.uint8)
    rgb[:192, :192] = ki67[800:992, 800:992]
    meta = {"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25}
    tifffile.imwrite(path, rgb, ome=True, tile=(64, 64), photometric="rgb", metadata=meta)
    return path


def test_a_slide_of_the_wrong_stain_is_refused_unless_forced(tmp_path, model_dir):
    slide = _ki67_slide(tmp_path / "ki67.ome.tif")  # the tiny model's card says he->ki67
    out = tmp_path / "v.zarr"
    args = ["stain", str(slide), "-m", str(model_dir), "-o", str(out), "-q", "--device", "cpu",
            "--precision", "fp32"]  # fmt: skip
    before = sorted(p.name for p in tmp_path.iterdir())
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert "looks like hematoxylin + DAB (Ki-67 / IHC), not H&E" in res.output
    assert str(slide) in res.output and "--force" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    res = CliRunner().invoke(main, [*args, "--force"])
    assert res.exit_code == 0, res.output
    prov = json.loads((out / ".zattrs").read_text())[PROVENANCE_KEY]
    assert prov["source_stain_check"]["forced"] is True
    assert prov["source_stain_check"]["looks_like"] == "hdab"
    assert "--force" in prov["source_stain_note"]


def test_a_slide_of_the_right_stain_records_the_check(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    out = tmp_path / "v.zarr"
    res = CliRunner().invoke(main, ["stain", str(slide), "-m", str(model_dir), "-o", str(out),
                                    "-q", "--device", "cpu", "--precision", "fp32"])  # fmt: skip
    assert res.exit_code == 0, res.output
    prov = json.loads((out / ".zattrs").read_text())[PROVENANCE_KEY]
    assert prov["source_stain_check"] == {
        "ok": True, "reason": "", "looks_like": "he", "expected": "he", "forced": False,
    }  # fmt: skip
    assert open_slide(out).levels[0].shape == (256, 320, 3)  # still a readable OME-Zarr
