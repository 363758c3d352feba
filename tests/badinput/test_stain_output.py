"""``stain --out``: only what this tool wrote is resumed or deleted; one writer at a time."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support.badinput import assert_refused, can_mount, checksums, fill_disk, invoke, tmpfs
from tests.support.models import write_tiny_generator
from tests.support.slides import write_slide

torch = pytest.importorskip("torch")
zarr = pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_generator(tmp_path_factory.mktemp("models"), "tiny-bad")


def _stain(slide, model_dir, out, *extra):
    return invoke("stain", slide, "-m", model_dir, "-o", out, "--device", "cpu",
                  "--precision", "fp32", "-q", *extra)  # fmt: skip


def _user_store(path):
    """A zarr group of the user's: an array and a labels group, no multiscales."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("data", shape=(4, 4), dtype="uint8")[:] = np.arange(16).reshape(4, 4)
    group.create_group("labels").attrs["note"] = "hand-drawn"
    (path / "README.txt").write_text("my annotations, months of work")
    return path


def test_a_zarr_group_without_our_marker_is_refused(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    out = _user_store(tmp_path / "mine.zarr")
    before = checksums(tmp_path)
    res = _stain(slide, model_dir, out)
    assert_refused(res, 1, out, "--overwrite")
    assert "overwrite=True" not in res.output  # the CLI spelling, not the Python one
    assert checksums(tmp_path) == before


def test_overwrite_never_deletes_a_folder_holding_unknown_files(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    out = tmp_path / "bf2raw.zarr"  # bioformats2raw layout: a group of images plus OME/
    group = zarr.open_group(str(out), mode="w", zarr_format=2)
    group.create_array("0", shape=(8, 8), dtype="uint8")
    (out / "OME").mkdir()
    (out / "OME" / "METADATA.ome.xml").write_text("<OME/>")
    before = checksums(tmp_path)
    res = _stain(slide, model_dir, out, "--overwrite")
    assert_refused(res, 2, out, "not written by virtualstain", "nothing was deleted")
    assert checksums(tmp_path) == before


def test_overwrite_never_replaces_an_ome_zarr_this_tool_did_not_write(tmp_path, model_dir):
    """The user's own OME-Zarr image (no marker): --overwrite used to replace it."""
    from napari_virtualstain.core.io import write_ome_zarr
    from napari_virtualstain.core.io.ownership import MARKER_NAME

    slide = write_slide(tmp_path / "he.ome.tif")
    out = write_ome_zarr(tmp_path / "userimg.zarr", np.full((64, 64, 3), 200, np.uint8), mpp=0.5)
    (out / MARKER_NAME).unlink()  # written by another tool: a plain NGFF image
    before = checksums(tmp_path)
    res = _stain(slide, model_dir, out, "--overwrite")
    assert_refused(res, 2, out, "not written by virtualstain", MARKER_NAME)
    assert len(res.output.strip().splitlines()) == 1
    assert checksums(tmp_path) == before


def test_a_user_folder_named_like_the_scratch_survives_a_run(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    mine = tmp_path / "v.zarr.tiles"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a cache")
    before = checksums(mine)
    res = _stain(slide, model_dir, tmp_path / "v.zarr")
    assert res.exit_code == 0, res.output
    assert checksums(mine) == before
    assert not list(tmp_path.glob("v.zarr.tiles-*"))  # our own scratch is gone
    assert not list(tmp_path.glob(".v.zarr.lock"))


def test_a_second_writer_is_refused_while_the_first_holds_the_output(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    out = tmp_path / "v.zarr"
    holder = subprocess.Popen(  # another process mid-run: it holds the output's lock
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path\n"
            "from napari_virtualstain.core.io.ownership import output_lock\n"
            "with output_lock(Path(sys.argv[1])):\n"
            "    print('locked', flush=True); time.sleep(60)\n"
        ), str(out)], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = checksums(tmp_path)
        res = _stain(slide, model_dir, out)
        assert_refused(res, 1, out, "another virtualstain run")
        assert checksums(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert _stain(slide, model_dir, out).exit_code == 0  # the lock died with its holder


def test_a_failed_run_leaves_no_litter(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "card.json").write_text((model_dir / "card.json").read_text())
    (broken / "weights.safetensors").write_bytes(b"\0" * 100)  # truncated weights
    before = checksums(tmp_path)
    res = _stain(slide, broken, tmp_path / "v.zarr")
    assert_refused(res, 1, broken / "weights.safetensors")
    assert checksums(tmp_path) == before  # no v.zarr, no v.zarr.tiles-*, no lock file


def test_a_finished_output_is_kept_and_the_hint_names_the_cli_flag(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    out = tmp_path / "v.zarr"
    assert _stain(slide, model_dir, out).exit_code == 0
    before = checksums(tmp_path)
    res = _stain(slide, model_dir, out)
    assert_refused(res, 1, out, "--overwrite")
    assert "overwrite=True" not in res.output.replace("overwrite=True in Python", "")
    assert checksums(tmp_path) == before
    assert _stain(slide, model_dir, out, "--overwrite").exit_code == 0  # ours: replaced


def test_a_run_failing_before_the_output_is_written_leaves_no_scratch(
    tmp_path, model_dir, monkeypatch
):
    import napari_virtualstain.core.io as io

    def full_disk(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(io, "write_ome_zarr", full_disk)  # after calibration, before any tile
    slide = write_slide(tmp_path / "he.ome.tif")
    before = checksums(tmp_path)
    res = _stain(slide, model_dir, tmp_path / "v.zarr")
    assert_refused(res, 1, tmp_path / "v.zarr", "no space left")
    assert checksums(tmp_path) == before


def test_an_empty_folder_at_out_is_written_into(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    (tmp_path / "v.zarr").mkdir()  # made by the user for the output: nothing to lose
    res = _stain(slide, model_dir, tmp_path / "v.zarr")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "v.zarr" / ".zattrs").is_file()


@pytest.mark.skipif(can_mount() is not None, reason=can_mount() or "")
def test_a_full_disk_during_stain_is_one_line_and_keeps_other_files(tmp_path, model_dir):
    slide = write_slide(tmp_path / "he.ome.tif")
    with tmpfs(tmp_path / "disk", size="256k") as disk:
        (disk / "earlier.json").write_text('{"keep": true}')
        fill_disk(disk)
        (disk / "filler.bin").write_bytes((disk / "filler.bin").read_bytes()[: -64 * 1024])
        before = checksums(disk)
        res = _stain(slide, model_dir, disk / "v.zarr")
        assert_refused(res, 1, disk, "no space left")
        after = checksums(disk)
        assert {k: after[k] for k in before} == before


@pytest.mark.parametrize(("dies_at", "says"), [(1, "nothing to resume"), (4, "is partial")])
def test_an_interruption_says_what_it_left(tmp_path, model_dir, monkeypatch, dies_at, says):
    from napari_virtualstain.core.engine.stain import StainEngine

    real, calls = StainEngine.stain_batch, []

    def interrupted(self, tiles, cancel=None):
        calls.append(len(tiles))
        if len(calls) == dies_at:  # the first call stains the glass-colour tile
            raise KeyboardInterrupt
        return real(self, tiles, cancel)

    monkeypatch.setattr(StainEngine, "stain_batch", interrupted)
    slide = write_slide(tmp_path / "he.ome.tif")
    out = tmp_path / "v.zarr"
    res = _stain(slide, model_dir, out, "--batch-size", "1", "--tile-px", "64")
    assert_refused(res, 1, out, "interrupted", says)
    if dies_at == 1:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["he.ome.tif"]  # truly nothing
    else:
        assert out.is_dir() and list(tmp_path.glob("v.zarr.tiles-*"))


def test_ctrl_c_while_python_shuts_down_exits_130_quietly(tmp_path):
    slide = write_slide(tmp_path / "he.ome.tif")
    # atexit runs in reverse order: this one runs last, as Ctrl-C landing during shutdown.
    code = (
        "import atexit, os, signal, sys, time\n"
        "from napari_virtualstain.cli import main\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(10)))\n"
        f"sys.argv = ['virtualstain', 'info', {str(slide)!r}]\n"
        "main()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert res.stderr == "" and "Traceback" not in res.stdout
    assert "he.ome.tif" in res.stdout or "levels" in res.stdout.lower()  # the output came out
