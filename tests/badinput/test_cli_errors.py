"""One line naming the file and the problem, exit 1 for a failed run and 2 for usage."""

from __future__ import annotations

import pytest

from tests.support.badinput import (
    assert_refused,
    can_mount,
    checksums,
    invoke,
    tmpfs,
    write_ki67_tiff,
)
from tests.support.slides import write_slide


def test_a_model_name_not_in_the_registry(tmp_path):
    slide = write_slide(tmp_path / "he.ome.tif")
    before = checksums(tmp_path)
    res = invoke("stain", slide, "-m", "no-such-model", "-o", tmp_path / "v.zarr", "-q",
                 "--device", "cpu")  # fmt: skip
    assert_refused(res, 1, "no-such-model", "known models")
    assert checksums(tmp_path) == before


def test_debug_shows_the_traceback(tmp_path):
    from napari_virtualstain.core.models.registry import ModelNotFoundError

    slide = write_slide(tmp_path / "he.ome.tif")
    res = invoke("--debug", "stain", slide, "-m", "no-such-model", "-o", tmp_path / "v.zarr",
                 "--device", "cpu")  # fmt: skip
    assert isinstance(res.exception, ModelNotFoundError)  # re-raised: the traceback shows


@pytest.mark.parametrize("mpp", ["0", "-1", "nan", "inf", "abc"])
@pytest.mark.parametrize("command", ["ratio", "stain"])
def test_mpp_is_validated_at_the_door(tmp_path, mpp, command):
    slide = write_ki67_tiff(tmp_path / "ki67.ome.tif")
    before = checksums(tmp_path)
    extra = ["-m", "demo-he2ki67", "-o", tmp_path / "v.zarr"] if command == "stain" else []
    res = invoke(command, slide, "--mpp", mpp, *extra)
    assert_refused(res, 2, "--mpp", mpp)
    assert checksums(tmp_path) == before


def test_a_cuda_device_on_a_cpu_only_torch(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    slide = write_slide(tmp_path / "he.ome.tif")
    before = checksums(tmp_path)
    res = invoke("stain", slide, "-m", "demo-he2ki67", "-o", tmp_path / "v.zarr",
                 "--device", "cuda:7")  # fmt: skip
    assert_refused(res, 2, "--device", "cuda:7")
    assert checksums(tmp_path) == before


def test_an_output_that_is_a_folder_is_refused_before_the_work(tmp_path):
    image = write_ki67_tiff(tmp_path / "ki67.ome.tif")
    (tmp_path / "results").mkdir()
    before = checksums(tmp_path)
    res = invoke("ratio", image, "--json", tmp_path / "results")
    assert_refused(res, 2, tmp_path / "results", "is a folder")
    assert "estimating" not in res.output  # refused before any measurement ran
    assert checksums(tmp_path) == before


@pytest.mark.skipif(can_mount() is not None, reason=can_mount() or "")
def test_an_unwritable_output_folder_is_refused_before_the_work(tmp_path):
    # A read-only mount: permission bits do not stop root, a read-only filesystem does.
    image = write_ki67_tiff(tmp_path / "ki67.ome.tif")
    with tmpfs(tmp_path / "ro", size="64k", read_only=True) as ro:
        before = checksums(tmp_path)
        res = invoke("ratio", image, "--json", ro / "r.json")
        assert_refused(res, 2, ro, "not writable")
        assert "estimating" not in res.output
        assert checksums(tmp_path) == before
        res = invoke("eval", "ratio", "--pred", image, "--truth", image, "--out", ro / "ev")
        assert_refused(res, 2, ro, "not writable")


def test_interrupting_a_run_is_one_line(tmp_path, monkeypatch):
    import napari_virtualstain.core.ki67.pipeline as pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "estimation_view", interrupted)
    image = write_ki67_tiff(tmp_path / "ki67.ome.tif")
    before = checksums(tmp_path)
    res = invoke("ratio", image, "--json", tmp_path / "r.json")
    assert_refused(res, 1, "interrupted")
    assert checksums(tmp_path) == before
