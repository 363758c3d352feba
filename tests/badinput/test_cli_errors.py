"""One line naming the file and the problem, exit 1 for a failed run and 2 for usage."""

from __future__ import annotations

import pytest
import tifffile

from tests.support.badinput import (
    assert_refused,
    can_mount,
    checksums,
    invoke,
    small_tissue_rgb,
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


@pytest.mark.parametrize("command", ["ratio", "info"])
def test_debug_shows_the_traceback_of_a_one_line_error(tmp_path, command):
    # `ratio` turns the SlideReadError into its own one-line error; `info` reports and goes on.
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    res = invoke(command, empty)
    assert_refused(res, 1, empty, "not a readable TIFF")
    res = invoke("--debug", command, empty)
    assert res.exit_code == 1
    assert "Traceback" in res.output and "TiffFileError" in res.output
    assert res.output.rstrip().splitlines()[-1].startswith("Error: ")  # the line still ends it


def test_info_says_error_as_the_other_commands(tmp_path):
    missing = tmp_path / "missing.tif"
    res = invoke("info", missing)
    assert res.exit_code == 1
    assert res.output.startswith("Error: ") and str(missing) in res.output, res.output


@pytest.mark.parametrize("values", [["-1"], ["0"], ["nan"], ["0.3", "0.2", "0.5"], ["0.1", "0.2"]])
def test_ratio_thresholds_are_validated_at_the_door(tmp_path, monkeypatch, values):
    import napari_virtualstain.cli.ratio as ratio

    monkeypatch.setattr(ratio, "_run", lambda *a, **k: pytest.fail("the measurement ran"))
    image = write_ki67_tiff(tmp_path / "ki67.ome.tif")
    before = checksums(tmp_path)
    res = invoke("ratio", image, *[a for v in values for a in ("--threshold", v)])
    assert_refused(res, 2, "--threshold")
    assert "np.float64" not in res.output
    assert checksums(tmp_path) == before


@pytest.mark.parametrize("command", ["ratio", "segment"])
def test_a_missing_pixel_size_is_a_usage_error(tmp_path, command):
    image = tmp_path / "nompp.tif"
    tifffile.imwrite(image, small_tissue_rgb(), photometric="rgb")
    before = checksums(tmp_path)
    extra = ["--csv", tmp_path / "n.csv"] if command == "segment" else []
    res = invoke(command, image, *extra)
    assert_refused(res, 2, image, "--mpp")
    assert "Usage:" not in res.output and len(res.output.strip().splitlines()) == 1
    assert checksums(tmp_path) == before


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--preview-level", "99", "has 1 level"),
        ("--preview-level", "-1", "-1"),
        ("--scheduler", "bogus", "not a scheduler address"),
        ("--scheduler", "local:0", "N >= 1"),
        ("--scheduler", "http://host:8786", "unknown protocol"),
    ],
)
def test_stain_options_are_usage_errors(tmp_path, option, value, says):
    slide = write_slide(tmp_path / "he.ome.tif")
    before = checksums(tmp_path)
    res = invoke("stain", slide, "-m", "demo-he2ki67", "-o", tmp_path / "v.zarr", "-q",
                 "--device", "cpu", option, value)  # fmt: skip
    assert_refused(res, 2, option, value, says)
    assert checksums(tmp_path) == before


def test_known_harmless_library_notices_stay_out_of_the_output(tmp_path, caplog):
    import logging
    import warnings

    torch = pytest.importorskip("torch")
    scripted = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 3)), scripted)
    slide = write_slide(tmp_path / "he.ome.tif")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = invoke("stain", slide, "-m", scripted, "-o", tmp_path / "v.zarr", "-q")
    assert_refused(res, 1, scripted, "TorchScript archive")
    assert not [w for w in seen if "TorchScript" in str(w.message)]
    # tifffile's note on a file without a first page: the refusal says it in its own words
    bad = tmp_path / "c.tif"
    bad.write_bytes(b"II*\x00not a tiff")
    with caplog.at_level(logging.WARNING, logger="tifffile"):
        res = invoke("info", bad)
        assert_refused(res, 1, bad, "holds no image series")
        assert not [r for r in caplog.records if r.name == "tifffile"]
        invoke("--debug", "info", bad)  # --debug shows everything
        assert [r for r in caplog.records if r.name == "tifffile"]
