"""Unreadable, malformed or colourless slides: an error naming the file (and where in it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from tests.support.badinput import (
    assert_refused,
    checksums,
    invoke,
    small_tissue_rgb,
    write_ki67_tiff,
)

zarr = pytest.importorskip("zarr")

from napari_virtualstain.core.io import write_ome_zarr  # noqa: E402


def test_a_corrupt_jpeg_tile_in_an_svs_names_the_file_and_the_tile(tmp_path):
    path = tmp_path / "corrupt.svs"
    rgb = np.ascontiguousarray(np.tile(write_ki67_tiff(tmp_path / "k.tif") and
                                       tifffile.imread(tmp_path / "k.tif"), (2, 2, 1)))  # fmt: skip
    desc = f"Aperio Image Library v12.0.15\n{rgb.shape[1]}x{rgb.shape[0]} JPEG/RGB Q=70|AppMag = 20|MPP = 0.5"
    tifffile.imwrite(path, rgb, tile=(128, 128), photometric="rgb", compression="jpeg",
                     description=desc)  # fmt: skip
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[1], page.databytecounts[1]  # tile (0, 1)
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\0" * count  # no JPEG markers left: libjpeg fails
    path.write_bytes(bytes(data))
    (tmp_path / "k.tif").unlink()
    before = checksums(tmp_path)
    res = invoke("ratio", path, "--json", tmp_path / "r.json")
    assert_refused(res, 1, path, "corrupt image data at level 0", "x 128..256")
    assert checksums(tmp_path) == before


def test_a_corrupt_ome_zarr_chunk_names_the_store_and_the_chunk(tmp_path):
    store = write_ome_zarr(tmp_path / "s.zarr", small_tissue_rgb(), mpp=0.5, chunk_px=128)
    (store / "0" / "0" / "0" / "1").write_bytes(b"garbage" * 20)  # c 0, y 0, x 128..256
    before = checksums(tmp_path)
    res = invoke("ratio", store, "--force")
    assert_refused(res, 1, store, "corrupt image data at level 0", "x 128..256")
    assert checksums(tmp_path) == before


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda a: a.update(multiscales="oops"), "must be a list of objects"),
        (lambda a: a.update(multiscales=[7]), "must be a list of objects"),
        (lambda a: a["multiscales"][0].update(datasets=[]), "no 'datasets'"),
        (lambda a: a["multiscales"][0].update(datasets=[{"p": 1}]), "no 'path'"),
        (lambda a: a["multiscales"][0].update(axes=[3, 4]), "axes"),
    ],
)
def test_malformed_ngff_metadata_names_the_store(tmp_path, edit, expected):
    store = write_ome_zarr(tmp_path / "s.zarr", small_tissue_rgb(), mpp=0.5)
    attrs = json.loads((store / ".zattrs").read_text())
    edit(attrs)
    (store / ".zattrs").write_text(json.dumps(attrs))
    before = checksums(tmp_path)
    for command in (["info"], ["ratio"]):
        res = invoke(*command, store)
        assert_refused(res, 1, store, expected)
    assert checksums(tmp_path) == before


def test_a_missing_chunk_inside_tissue_is_reported(tmp_path):
    rgb = small_tissue_rgb(512, 512)
    store = write_ome_zarr(tmp_path / "s.zarr", rgb, mpp=0.5, n_levels=2, chunk_px=128)
    (store / "0" / "0" / "2" / "2").unlink()  # level 0, y 256..384, x 256..384: tissue
    before = checksums(tmp_path)
    res = invoke("ratio", store, "--force")
    assert_refused(res, 1, store, "chunk 0/2/2 of level 0", "missing")
    assert checksums(tmp_path) == before


def test_a_missing_chunk_in_the_background_reads_as_glass(tmp_path):
    from napari_virtualstain.core.io import open_slide

    rgb = small_tissue_rgb(512, 512)
    rgb[:256, :256] = 255  # glass: a writer may skip such a chunk (it equals the fill value)
    store = write_ome_zarr(tmp_path / "s.zarr", rgb, mpp=0.5, n_levels=2, chunk_px=128)
    for name in ("0/0/0/0", "0/0/0/1", "0/0/1/0", "0/0/1/1"):
        (store / "0" / name).unlink(missing_ok=True)
    np.testing.assert_array_equal(np.asarray(open_slide(store).levels[0]), rgb)


def test_a_one_pixel_wide_image_is_refused(tmp_path):
    path = tmp_path / "thin.tif"
    tifffile.imwrite(path, small_tissue_rgb()[:, :1].copy(), photometric="rgb")
    before = checksums(tmp_path)
    for args in (["info", path], ["ratio", path, "--mpp", "0.5"],
                 ["stain", path, "-m", "demo-he2ki67", "-o", tmp_path / "v.zarr", "--mpp", "0.5"]):  # fmt: skip
        assert_refused(invoke(*args), 1, path, "256 x 1 px")
    assert checksums(tmp_path) == before


@pytest.mark.parametrize("layout", ["grey", "rgb-equal"])
def test_greyscale_is_refused_by_ratio_and_stain(tmp_path, layout):
    grey = small_tissue_rgb()[..., 1]
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, grey if layout == "grey" else np.stack([grey] * 3, -1))
    before = checksums(tmp_path)
    assert_refused(invoke("ratio", path, "--mpp", "0.5", "--force"), 1, path, "no colour")
    res = invoke("stain", path, "-m", "demo-he2ki67", "-o", tmp_path / "v.zarr", "--mpp", "0.5",
                 "--device", "cpu", "-q")  # fmt: skip
    assert_refused(res, 1, path, "no colour")
    assert checksums(tmp_path) == before


def _geojson(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _feature(coordinates):
    return {"type": "Feature", "properties": {"name": "r"},
            "geometry": {"type": "Polygon", "coordinates": coordinates}}  # fmt: skip


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {
                "type": "FeatureCollection",
                "features": [_feature([[[0, 0], [0, 1e308], [1e308, 1e308], [0, 0]]])],
            },
            "far outside",
        ),  # fmt: skip
        ([1, 2, 3], "not a GeoJSON Feature"),
        ({"type": "FeatureCollection", "features": ["a", 1]}, "not a GeoJSON Feature"),
        ({"type": "FeatureCollection", "features": [_feature("abc")]}, "coordinates"),
        (
            {"type": "FeatureCollection", "features": [_feature([[[0, 0], [5], [5, 5, 5]]])]},
            "ragged",
        ),  # fmt: skip
        (
            {"type": "FeatureCollection", "features": [_feature([[["a", "b"], [1, 2], [3, 4]]])]},
            "feature 0",
        ),  # fmt: skip
    ],
)
def test_hostile_roi_files_are_refused(tmp_path, content, expected):
    image = write_ki67_tiff(tmp_path / "ki67.ome.tif")
    roi = _geojson(tmp_path / "roi.geojson", content)
    before = checksums(tmp_path)
    res = invoke("ratio", image, "--roi", roi, "--json", tmp_path / "r.json")
    assert_refused(res, 1, roi, expected)
    assert checksums(tmp_path) == before
