"""``eval``: unreadable or ambiguous inputs refused naming the file; --out made only at the end."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tests.support.badinput import assert_refused, checksums, invoke


def _labels(tmp_path):
    ok = tmp_path / "truth.npy"
    labels = np.zeros((32, 32), np.int32)
    labels[4:12, 4:12] = 1
    np.save(ok, labels)
    return ok


def test_an_object_npy_is_refused_without_unpickling(tmp_path):
    bad = tmp_path / "pred.npy"
    np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    truth = _labels(tmp_path)
    before = checksums(tmp_path)
    res = invoke("eval", "seg", "--pred", bad, "--truth", truth, "--out", tmp_path / "ev")
    assert_refused(res, 1, bad, "pickle")
    assert checksums(tmp_path) == before  # and --out was not created


def test_an_empty_tiff_is_refused(tmp_path):
    bad = tmp_path / "pred.tif"
    bad.write_bytes(b"")
    truth = _labels(tmp_path)
    before = checksums(tmp_path)
    res = invoke("eval", "seg", "--pred", bad, "--truth", truth, "--out", tmp_path / "ev")
    assert_refused(res, 1, bad, "cannot read as a label image")
    assert checksums(tmp_path) == before


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"name,ratio\na,0.1\nb\n", "row 3 has 1 fields"),
        (b"name,ratio\na,0.1\nb,0.2,9\n", "row 3 has 3 fields"),
        ("name,ratio\n\u00e9,0.1\nb,0.2\n".encode("latin-1"), "not UTF-8"),
        (b"name,ratio\na,0.1\na,0.2\n", "appears twice"),
        (b"name,ratio\na,zero\n", "not numeric"),
        (b"", "no rows"),
    ],
)
def test_bad_ratio_csvs_are_refused(tmp_path, content, expected):
    pred = tmp_path / "pred.csv"
    pred.write_bytes(content)
    truth = tmp_path / "truth.csv"
    truth.write_text("name,ratio\na,0.1\nb,0.2\n")
    before = checksums(tmp_path)
    res = invoke("eval", "ratio", "--pred", pred, "--truth", truth, "--out", tmp_path / "ev")
    assert_refused(res, 1, pred, expected)
    assert checksums(tmp_path) == before


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_phash_weights_are_refused_without_a_traceback(tmp_path):
    torch = pytest.importorskip("torch")
    import tifffile

    from tests.support.badinput import small_tissue_rgb

    for name in ("gen", "ref"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "a.tif", small_tissue_rgb(64, 64), photometric="rgb")
    weights = tmp_path / "weights.pth"
    torch.save({"fc.weight": _Evil()}, weights, pickle_module=pickle)
    before = checksums(tmp_path)
    res = invoke("eval", "stain", "--generated", tmp_path / "gen", "--reference",
                 tmp_path / "ref", "--unpaired", "--phash-weights", weights,
                 "--out", tmp_path / "ev")  # fmt: skip
    assert_refused(res, 1, weights, "pickle")
    assert "this must never run" not in res.output
    assert checksums(tmp_path) == before
