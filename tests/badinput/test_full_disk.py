"""Data loss: a full disk must never truncate results that were already there."""

from __future__ import annotations

import json

import pytest

from tests.support.badinput import (
    assert_refused,
    can_mount,
    checksums,
    fill_disk,
    invoke,
    tmpfs,
    write_ki67_tiff,
)

REASON = can_mount()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def test_ratio_outputs_on_a_full_disk_keep_the_previous_files(tmp_path):
    image = write_ki67_tiff(tmp_path / "ki67.ome.tif")
    with tmpfs(tmp_path / "disk", size="512k") as disk:
        json_out, labels_out, csv_out = disk / "ratio.json", disk / "labels.tif", disk / "n.csv"
        res = invoke("ratio", image, "--json", json_out, "--labels-out", labels_out,
                     "--nuclei-csv", csv_out)  # fmt: skip
        assert res.exit_code == 0, res.output
        before = checksums(disk)
        good = json.loads(json_out.read_text())
        fill_disk(disk)
        before_fill = {k: v for k, v in checksums(disk).items() if k != "filler.bin"}
        assert before_fill == before
        res = invoke("ratio", image, "--json", json_out, "--labels-out", labels_out,
                     "--nuclei-csv", csv_out)  # fmt: skip
        assert_refused(res, 1, json_out, "no space left")
        after = {k: v for k, v in checksums(disk).items() if k != "filler.bin"}
        assert after == before  # the earlier results intact, no temporary file left
        assert json.loads(json_out.read_text()) == good


def test_eval_metrics_on_a_full_disk_keep_the_previous_files(tmp_path):
    (tmp_path / "pred.csv").write_text("name,ratio\na,0.1\nb,0.4\nc,0.7\n")
    (tmp_path / "truth.csv").write_text("name,ratio\na,0.12\nb,0.35\nc,0.6\n")
    with tmpfs(tmp_path / "disk", size="2m") as disk:
        args = ["eval", "ratio", "--pred", tmp_path / "pred.csv", "--truth",
                tmp_path / "truth.csv", "--out", disk / "ev"]  # fmt: skip
        assert invoke(*args).exit_code == 0
        before = checksums(disk)
        fill_disk(disk)
        res = invoke(*args)
        assert_refused(res, 1, disk / "ev", "no space left")
        assert {k: v for k, v in checksums(disk).items() if k != "filler.bin"} == before
