"""``virtualstain tiles``: refused before any work, and never writing over what it did not write."""

from __future__ import annotations

import shutil

import pytest

from tests.support.badinput import assert_refused, checksums, invoke
from tests.support.slides import write_slide

SMALL = ("--size", "64", "--overlap", "0", "--mpp", "0.5", "-q")


def test_two_slides_of_one_file_name_are_refused_before_any_work(tmp_path):
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        write_slide(tmp_path / side / "s.ome.tif")
    before = checksums(tmp_path)
    res = invoke("tiles", tmp_path / "a/s.ome.tif", tmp_path / "b/s.ome.tif", "--out",
                 tmp_path / "t", *SMALL)  # fmt: skip
    assert_refused(res, 2, "a/s.ome.tif", "b/s.ome.tif", "'s'")
    assert checksums(tmp_path) == before  # no tiles folder


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)])
def test_a_folder_of_the_users_is_never_written_into(tmp_path, overwrite):
    slide = write_slide(tmp_path / "ki_crop.ome.tif")
    (tmp_path / "tuser").mkdir()
    (tmp_path / "tuser" / "ki_crop_L0_y0_x0.png").write_bytes(b"mine")  # a tile's very name
    before = checksums(tmp_path)
    res = invoke("tiles", slide, "--out", tmp_path / "tuser", *SMALL, *overwrite)
    # as `stain`: a refused output is a failed run, --overwrite of the user's files a usage error
    assert_refused(res, 2 if overwrite else 1, "tuser", "not written by virtualstain tiles")
    assert checksums(tmp_path) == before


def test_overwrite_keeps_a_tiles_folder_holding_a_file_of_the_users(tmp_path):
    slide = write_slide(tmp_path / "s.ome.tif")
    assert invoke("tiles", slide, "--out", tmp_path / "t", *SMALL).exit_code == 0
    (tmp_path / "t" / "notes.txt").write_text("the user's")
    before = checksums(tmp_path)
    res = invoke("tiles", slide, "--out", tmp_path / "t", *SMALL, "--overwrite")
    assert_refused(res, 2, "notes.txt", "even with --overwrite")
    assert checksums(tmp_path) == before


@pytest.mark.parametrize("mpp", ["-1", "nan", "inf", "abc"])
def test_mpp_is_validated_at_the_door(tmp_path, mpp):
    slide = write_slide(tmp_path / "s.ome.tif")
    before = checksums(tmp_path)
    res = invoke("tiles", slide, "--out", tmp_path / "t", "--mpp", mpp, "-q")
    assert_refused(res, 2, "--mpp", mpp)
    assert checksums(tmp_path) == before


def test_an_out_that_is_a_file_is_a_usage_error(tmp_path):
    slide = write_slide(tmp_path / "s.ome.tif")
    (tmp_path / "afile").write_text("x")
    before = checksums(tmp_path)
    res = invoke("tiles", slide, "--out", tmp_path / "afile", *SMALL)
    assert_refused(res, 2, "afile", "is a file")
    assert checksums(tmp_path) == before


def test_an_interrupted_run_says_how_to_resume_and_the_rerun_finishes(tmp_path, monkeypatch):
    import napari_virtualstain.core.train.tiles as tiles

    slide = write_slide(tmp_path / "s.ome.tif")
    args = ("--size", "32", "--overlap", "0", "--mpp", "0.5", "-q")  # 20 positions, 9 in tissue
    assert "9 tiles kept" in invoke("tiles", slide, "--out", tmp_path / "whole", *args).output
    save_png, calls = tiles.save_png, []

    def interrupted(path, rgb):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third tile is written
        save_png(path, rgb)

    monkeypatch.setattr(tiles, "save_png", interrupted)
    res = invoke("tiles", slide, "--out", tmp_path / "t", *args)
    assert_refused(res, 1, "interrupted", "partial (2 tiles so far)", "Rerun the same command")
    assert "overwrite=True" not in res.output
    assert not (tmp_path / "t" / "index.csv").exists()  # the index says it is unfinished
    assert (tmp_path / "t" / "index.partial.csv").read_text().count("\n") == 1 + 2
    monkeypatch.setattr(tiles, "save_png", save_png)
    res = invoke("tiles", slide, "--out", tmp_path / "t", *args)
    assert res.exit_code == 0, res.output
    assert "9 tiles kept" in res.output and "2 of them from the interrupted run" in res.output
    assert checksums(tmp_path / "t") == checksums(tmp_path / "whole")
    shutil.rmtree(tmp_path / "whole")
