"""``stain_slide(overwrite=True)`` replaces only what this tool wrote (the napari save path)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_virtualstain.core.engine.distributed import stain_slide  # noqa: E402
from napari_virtualstain.core.io import write_ome_zarr  # noqa: E402
from napari_virtualstain.core.io.ownership import MARKER_NAME, read_marker  # noqa: E402
from tests.support.badinput import checksums  # noqa: E402
from tests.support.models import write_tiny_generator  # noqa: E402
from tests.support.slides import write_slide  # noqa: E402

KW = {"device": "cpu", "precision": "fp32"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(write_tiny_generator(tmp_path_factory.mktemp("models"), "tiny-own"))


def _users_ome_zarr(path):
    """A plain NGFF image written by another tool: our writer, then our marker removed."""
    rgb = np.random.default_rng(0).integers(0, 255, (96, 80, 3), dtype=np.uint8)
    out = write_ome_zarr(path, rgb, mpp=0.5, name="mine")
    (out / MARKER_NAME).unlink()
    return out


def test_a_users_ome_zarr_survives_overwrite_byte_identical(tmp_path, model):
    slide = write_slide(tmp_path / "he.ome.tif")
    out = _users_ome_zarr(tmp_path / "mine.zarr")
    before = checksums(tmp_path)
    assert len(before) > 5  # metadata and chunks, so the comparison covers real files
    with pytest.raises((ValueError, FileExistsError)) as err:
        stain_slide(slide, model, out, overwrite=True, **KW)
    message = str(err.value)
    assert str(out) in message
    assert "was not written by virtualstain" in message and "nothing was deleted" in message
    assert checksums(tmp_path) == before  # no scratch, lock or partial output left either


def test_write_ome_zarr_overwrite_refuses_a_foreign_image(tmp_path):
    out = _users_ome_zarr(tmp_path / "mine.zarr")
    before = checksums(tmp_path)
    with pytest.raises(ValueError, match="was not written by virtualstain"):
        write_ome_zarr(out, np.zeros((32, 32, 3), np.uint8), mpp=0.5, overwrite=True)
    assert checksums(tmp_path) == before


def test_without_overwrite_a_foreign_image_gets_no_overwrite_hint(tmp_path, model):
    slide = write_slide(tmp_path / "he.ome.tif")
    out = _users_ome_zarr(tmp_path / "mine.zarr")
    with pytest.raises(FileExistsError, match="even with overwrite") as err:
        stain_slide(slide, model, out, **KW)
    assert "use --overwrite" not in str(err.value)


def test_overwrite_still_replaces_this_tools_own_output(tmp_path, model):
    slide = write_slide(tmp_path / "he.ome.tif")
    out = tmp_path / "v.zarr"
    stain_slide(slide, model, out, **KW)
    (out / "notes").mkdir()  # ours, but since given something that is not an image: kept
    with pytest.raises(ValueError, match="notes"):
        stain_slide(slide, model, out, overwrite=True, **KW)
    (out / "notes").rmdir()
    chunk = next(p for p in (out / "0").rglob("*") if p.is_file() and not p.name.startswith("."))
    chunk.write_bytes(b"stale")
    stain_slide(slide, model, out, overwrite=True, **KW)
    assert chunk.read_bytes() != b"stale"  # replaced
    assert read_marker(out)["state"] == "complete"
