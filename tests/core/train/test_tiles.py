"""Tile extraction: grid counts, resampling to a target mpp, white cleaning, the index CSV."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.train.tiles import (
    TileSpec,
    count_grid_tiles,
    extract_tiles,
    grid_starts,
    load_png,
    read_index,
    tissue_fraction,
)


def half_tissue_image(h: int = 400, w: int = 600) -> np.ndarray:
    """Left half pink-purple tissue texture, right half white glass."""
    rng = np.random.default_rng(0)
    img = np.full((h, w, 3), 245, np.uint8)
    tissue = np.stack([rng.integers(150, 220, (h, w // 2)), rng.integers(60, 140, (h, w // 2)),
                       rng.integers(140, 200, (h, w // 2))], axis=-1)  # fmt: skip
    img[:, : w // 2] = tissue.astype(np.uint8)
    return img


@pytest.fixture
def half_tissue_tiff(tmp_path):
    import tifffile

    path = tmp_path / "half.ome.tif"
    meta = {"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25}
    tifffile.imwrite(path, half_tissue_image(), photometric="rgb", metadata=meta, ome=True)
    return path


def test_grid_starts_cover_the_edge():
    assert grid_starts(1000, 288, 144) == [0, 144, 288, 432, 576, 712]
    assert grid_starts(288, 288, 144) == [0]
    assert grid_starts(100, 288, 144) == [0]  # smaller than a tile: one padded tile
    assert grid_starts(576, 288, 288) == [0, 288]


def test_tissue_fraction_tells_glass_from_tissue():
    img = half_tissue_image(100, 100)
    assert tissue_fraction(img) == pytest.approx(0.5, abs=0.01)
    assert tissue_fraction(np.full((10, 10, 3), 250, np.uint8)) == 0.0
    # pale eosin is bright but pink: still tissue
    assert tissue_fraction(np.full((10, 10, 3), (250, 215, 235), np.uint8)) == 1.0
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        tissue_fraction(np.zeros((4, 4)))


def test_spec_validates():
    with pytest.raises(ValueError, match="overlap_px"):
        TileSpec(tile_px=64, overlap_px=64)
    with pytest.raises(ValueError, match="min_tissue"):
        TileSpec(min_tissue=1.5)
    assert TileSpec().stride_px == 144  # seed 000 default: 288 px with 144 overlap


def test_extract_counts_resamples_and_cleans(tmp_path, half_tissue_tiff):
    from napari_virtualstain.core.io import open_slide

    slide = open_slide(half_tissue_tiff)
    # 0.25 -> 0.5 µm/px halves the 400 x 600 image to 200 x 300 output pixels
    spec = TileSpec(tile_px=100, overlap_px=0, mpp=0.5, min_tissue=0.5)
    assert count_grid_tiles(slide, spec) == 2 * 3
    records = extract_tiles([slide], tmp_path / "out", spec)
    # the middle column straddles the tissue edge at 150 px: 100-150 is tissue, 150-200 not
    xs = sorted({r.x for r in records})
    assert xs == [0, 200]  # level-0 origins of output columns 0 and 100
    assert all(r.read_px == 200 and r.mpp == 0.5 for r in records)
    assert all(r.tissue_fraction >= 0.5 for r in records)
    tile = load_png(tmp_path / "out" / records[0].file)
    assert tile.shape == (100, 100, 3)
    assert read_index(tmp_path / "out") == records
    # white cleaning off: every grid position is written
    everything = extract_tiles([slide], tmp_path / "all", TileSpec(100, 0, 0.5, min_tissue=0.0))
    assert len(everything) == 6


def test_extract_refuses_to_overwrite_and_needs_mpp(tmp_path, half_tissue_tiff):
    from PIL import Image

    spec = TileSpec(tile_px=100, overlap_px=50, mpp=0.5, min_tissue=0.0)
    extract_tiles([half_tissue_tiff], tmp_path / "out", spec)
    with pytest.raises(FileExistsError, match="index.csv"):
        extract_tiles([half_tissue_tiff], tmp_path / "out", spec)
    png = tmp_path / "tile.png"
    Image.fromarray(half_tissue_image(120, 120)).save(png)
    with pytest.raises(ValueError, match=r"tile\.png.*no pixel size"):
        extract_tiles([png], tmp_path / "png_out", spec)
    records = extract_tiles([png], tmp_path / "png_out2", spec, source_mpp=0.5)
    assert len(records) == 4 and records[0].read_px == 100  # 120 px: starts 0 and 20


def test_extract_is_a_cancellable_generator(tmp_path, half_tissue_tiff):
    from napari_virtualstain.core.train.tiles import iter_extract_tiles

    spec = TileSpec(tile_px=50, overlap_px=0, mpp=0.5, min_tissue=0.0)
    gen = iter_extract_tiles([half_tissue_tiff], tmp_path / "out", spec)
    first = next(gen)
    assert (first.done, first.total) == (1, 4 * 6)
    next(gen)
    gen.close()
    assert len(read_index(tmp_path / "out")) == 2  # the index holds what was written
