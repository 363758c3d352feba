import json

import numpy as np
import pytest
import zarr

from napari_virtualstain.core.io import (
    SlideReadError,
    SlideWriteError,
    open_slide,
    pyramid_level_count,
    write_ome_zarr,
)


def test_round_trip_with_ngff_metadata(tmp_path, rgb_small):
    calls = []
    out = write_ome_zarr(
        tmp_path / "out.ome.zarr",
        rgb_small,
        mpp=0.5,
        name="sample",
        metadata={"model": "x", "sha256": "abc"},
        chunk_px=128,
        progress=lambda p: calls.append((p.done, p.total)),
    )
    attrs = json.loads((out / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["axes"][2]["unit"] == "micrometer"
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales[0] == [1.0, 0.5, 0.5] and scales[1] == [1.0, 1.0, 1.0]
    assert len(ms["datasets"]) == pyramid_level_count((600, 800)) == 2
    assert attrs["napari_virtualstain"] == {"model": "x", "sha256": "abc"}
    assert calls[-1][0] == calls[-1][1]
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:], strict=False))

    slide = open_slide(out)
    assert slide.format == "ome-zarr" and slide.mpp == pytest.approx(0.5)
    np.testing.assert_array_equal(slide.levels[0].compute(), rgb_small)
    expected = rgb_small.astype(float).reshape(300, 2, 400, 2, 3).mean(axis=(1, 3)).round()
    np.testing.assert_allclose(slide.levels[1].compute(), expected, atol=1)


def test_level_count_from_size():
    assert pyramid_level_count((512, 512)) == 1
    assert pyramid_level_count((1000, 600)) == 2
    assert pyramid_level_count((20000, 20000)) == 7


def test_refuses_to_overwrite(tmp_path, rgb_small):
    out = write_ome_zarr(tmp_path / "a.zarr", rgb_small, mpp=0.5)
    with pytest.raises(SlideWriteError, match="already exists"):
        write_ome_zarr(out, rgb_small, mpp=0.5)
    precious = tmp_path / "precious.zarr"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(SlideWriteError, match="not a zarr group"):
        write_ome_zarr(precious, rgb_small, mpp=0.5, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_rejects_non_rgb(tmp_path):
    with pytest.raises(SlideWriteError, match="uint8 RGB"):
        write_ome_zarr(tmp_path / "x.zarr", np.zeros((8, 8), np.uint8), mpp=1.0)


def test_reads_ngff_05_zarr_v3(tmp_path, rgb_small):
    group = zarr.open_group(str(tmp_path / "v3.zarr"), mode="w", zarr_format=3)
    group.create_array("s0", data=np.moveaxis(rgb_small, -1, 0), chunks=(3, 256, 256))
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": [
                    {
                        "path": "s0",
                        "coordinateTransformations": [{"type": "scale", "scale": [1, 0.3, 0.3]}],
                    }
                ],
            }
        ],
    }
    slide = open_slide(tmp_path / "v3.zarr")
    assert slide.mpp == pytest.approx(0.3)
    np.testing.assert_array_equal(slide.levels[0].compute(), rgb_small)


def test_zarr_without_multiscales_is_refused(tmp_path):
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array(
        "a", shape=(4, 4), dtype="u1"
    )
    with pytest.raises(SlideReadError, match="multiscales"):
        open_slide(tmp_path / "plain.zarr")


def test_zarr_without_units_has_unknown_mpp(tmp_path, rgb_small):
    out = write_ome_zarr(tmp_path / "nounit.zarr", rgb_small, mpp=None)
    assert open_slide(out).mpp is None
