"""``virtualstain stain SLIDE... --out-dir DIR``: several slides, per-slide resume, a table."""

from __future__ import annotations

import pytest

from tests.support.models import write_tiny_generator
from tests.support.slides import write_slide

torch = pytest.importorskip("torch")
from click.testing import CliRunner  # noqa: E402

from napari_virtualstain.cli import main  # noqa: E402
from napari_virtualstain.core.io import open_slide  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_generator(tmp_path_factory.mktemp("models"), "tiny-many")


def test_several_slides_into_a_folder_with_a_summary_and_resume(tmp_path, model_dir):
    a = write_slide(tmp_path / "a.ome.tif")
    b = write_slide(tmp_path / "b.ome.tif")
    bad = tmp_path / "c.tif"
    bad.write_bytes(b"II*\x00not a tiff")
    out_dir = tmp_path / "virtual"
    args = ["stain", str(a), str(b), "-m", str(model_dir), "--out-dir", str(out_dir), "-q",
            "--device", "cpu", "--precision", "fp32"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].split()[:4] == ["slide", "tiles", "seconds", "output"]
    assert len(lines) == 3 and all(line.endswith("ok") for line in lines[1:])
    for name in ("a", "b"):
        assert open_slide(out_dir / f"{name}.zarr").levels[0].shape == (256, 320, 3)
    # Again, with a bad slide added: finished slides are skipped, the bad one fails alone.
    res = CliRunner().invoke(main, [*args[:3], str(bad), *args[3:]])
    assert res.exit_code == 1
    assert res.output.count("done before (skipped)") == 2
    assert (
        "c.tif" in res.output and "failed:" in res.output and "1 of 3 slides failed" in res.output
    )


def test_one_slide_still_needs_out_and_several_need_out_dir(tmp_path, model_dir):
    a = write_slide(tmp_path / "a.ome.tif")
    res = CliRunner().invoke(main, ["stain", str(a), "-m", str(model_dir)])
    assert res.exit_code == 2 and "--out" in res.output
    twin = tmp_path / "other"
    twin.mkdir()
    b = write_slide(twin / "a.ome.tif")
    res = CliRunner().invoke(main, ["stain", str(a), str(b), "-m", str(model_dir),
                                    "--out-dir", str(tmp_path / "o")])  # fmt: skip
    assert res.exit_code == 2 and "same name" in res.output
