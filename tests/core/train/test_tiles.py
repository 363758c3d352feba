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
    with pytest.raises(FileExistsError, match="finished tile set.*--overwrite"):
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
    # the index holds what was written, under a name that says it is unfinished
    assert len(read_index(tmp_path / "out" / "index.partial.csv")) == 2
    with pytest.raises(FileNotFoundError, match="unfinished"):
        read_index(tmp_path / "out")


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_interrupted_run_resumes_to_the_same_tiles(tmp_path, half_tissue_tiff):
    from napari_virtualstain.core.progress import drain
    from napari_virtualstain.core.train.tiles import iter_extract_tiles

    spec = TileSpec(tile_px=50, overlap_px=0, mpp=0.5, min_tissue=0.3)
    other = tmp_path / "other.ome.tif"
    other.write_bytes(half_tissue_tiff.read_bytes())
    slides = [half_tissue_tiff, other]
    fresh = extract_tiles(slides, tmp_path / "fresh", spec)
    gen = iter_extract_tiles(slides, tmp_path / "out", spec)
    for _ in range(24 + 7):  # all of the first slide, then 7 positions of the second
        step = next(gen)
    gen.close()
    assert step.details["kept"] < len(fresh)
    assert not (tmp_path / "out" / "index.csv").exists()
    reports = []
    records = drain(iter_extract_tiles(slides, tmp_path / "out", spec), reports.append)
    assert reports[0].done == 24 + 7 + 1  # neither slide was read again from the start
    assert reports[-1].details["resumed"] == step.details["kept"]
    assert records == fresh and read_index(tmp_path / "out") == fresh
    fresh_files = _files(tmp_path / "fresh")
    assert _files(tmp_path / "out") == fresh_files  # pixels, index and marker alike
    # a rerun of the finished folder is refused; with overwrite it is cut again
    with pytest.raises(FileExistsError, match="finished"):
        extract_tiles(slides, tmp_path / "out", spec)
    again = extract_tiles(slides, tmp_path / "out", spec, overwrite=True)
    assert again == fresh and _files(tmp_path / "out") == fresh_files


def test_a_partial_run_of_other_settings_is_not_resumed(tmp_path, half_tissue_tiff):
    from napari_virtualstain.core.train.tiles import iter_extract_tiles

    gen = iter_extract_tiles([half_tissue_tiff], tmp_path / "out", TileSpec(50, 0, 0.5, 0.0))
    next(gen)
    gen.close()
    with pytest.raises(FileExistsError, match="unfinished tiles run of other"):
        extract_tiles([half_tissue_tiff], tmp_path / "out", TileSpec(60, 0, 0.5, 0.0))


def test_two_slides_of_one_name_are_refused_before_writing(tmp_path, half_tissue_tiff):
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / half_tissue_tiff.name
    twin.write_bytes(half_tissue_tiff.read_bytes())
    with pytest.raises(ValueError, match="two slides are named 'half'"):
        extract_tiles([half_tissue_tiff, twin], tmp_path / "out", TileSpec(100, 0, 0.5))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_files_it_did_not_write_are_never_touched(tmp_path, half_tissue_tiff, overwrite):
    spec = TileSpec(tile_px=100, overlap_px=0, mpp=0.5, min_tissue=0.0)
    user = tmp_path / "user"
    user.mkdir()
    (user / "half_L0_y0_x0.png").write_bytes(b"the user's own file")  # a tile's very name
    with pytest.raises(FileExistsError, match="not written by virtualstain tiles"):
        extract_tiles([half_tissue_tiff], user, spec, overwrite=overwrite)
    assert _files(user) == {"half_L0_y0_x0.png": b"the user's own file"}
    ours = tmp_path / "ours"
    extract_tiles([half_tissue_tiff], ours, spec)
    (ours / "notes.txt").write_text("added by the user")
    before = _files(ours)
    with pytest.raises(
        FileExistsError, match=r"did not write \(notes\.txt\).*even with --overwrite"
    ):
        extract_tiles([half_tissue_tiff], ours, spec, overwrite=overwrite)
    assert _files(ours) == before


def test_an_output_that_is_a_file_and_inf_mpp_are_refused(tmp_path, half_tissue_tiff):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        extract_tiles([half_tissue_tiff], tmp_path / "f", TileSpec(100, 0, 0.5))
    for bad in (float("inf"), float("nan"), -1.0, 0.0):
        with pytest.raises(ValueError, match="finite number > 0"):
            TileSpec(mpp=bad)
