"""Held-out tiles share no pixel with training tiles: by slide, else blocks and a guard band."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest

from napari_virtualstain.core.train.layouts import load_bci_layout, unpaired_from_folders
from napari_virtualstain.core.train.sources import folder_mpp, resolve_mpp, split_folder
from napari_virtualstain.core.train.split import Footprint, plan_split
from napari_virtualstain.core.train.tiles import save_png
from napari_virtualstain.core.train.tiles_out import INDEX_FIELDS


def overlapping_grid(slide="s.svs", n=12, size=64, stride=32):
    """An n x n tiling with 50 % overlap, as ``tiles`` writes by default."""
    return [Footprint(slide, 0, y * stride, x * stride, size) for y in range(n) for x in range(n)]


def overlaps(plan, footprints) -> int:
    """Held-out footprints that intersect a training footprint (checked pair by pair)."""
    train = [f for f, p in zip(footprints, plan.parts, strict=True) if p == "train"]
    test = [f for f, p in zip(footprints, plan.parts, strict=True) if p == "test"]
    return sum(any(t.intersects(f) for f in train) for t in test)


def test_no_held_out_tile_overlaps_a_training_tile():
    tiles = overlapping_grid()
    plan = plan_split(tiles, 0.1)
    assert plan.method == "blocks"
    assert overlaps(plan, tiles) == 0
    # a file-level split of the same tiling puts neighbours of held-out tiles into training
    assert plan.count("guard") > 0 and plan.count("train") > 0
    assert 0.05 * len(tiles) <= plan.count("test") <= 0.2 * len(tiles)
    # deterministic, whatever the order of the files
    shuffled = tiles[:]
    random.Random(1).shuffle(shuffled)
    again = dict(zip(shuffled, plan_split(shuffled, 0.1).parts, strict=True))
    assert [again[f] for f in tiles] == list(plan.parts)
    assert "spatial blocks" in plan.describe() and "dropped" in plan.describe()


def test_several_slides_are_held_out_whole():
    tiles = [*overlapping_grid("a.svs", 4), *overlapping_grid("b.svs", 4),
             *overlapping_grid("c.svs", 4)]  # fmt: skip
    plan = plan_split(tiles, 0.3)
    assert plan.method == "slides" and plan.count("guard") == 0 and len(plan.held_out) == 1
    held = {f.slide for f, p in zip(tiles, plan.parts, strict=True) if p == "test"}
    trained = {f.slide for f, p in zip(tiles, plan.parts, strict=True) if p == "train"}
    assert len(held) == 1 and not held & trained
    assert plan_split(tiles, 0.0).method == "none"


def test_a_split_that_leaves_no_training_tile_is_refused():
    two = overlapping_grid(n=2, size=64, stride=32)[:2]  # side by side, overlapping by half
    with pytest.raises(ValueError, match="no overlap-free hold-out"):
        plan_split(two, 0.5, block_px=32)
    # one block only: nothing can be held out, and the description says so
    assert "nothing held out" in plan_split(two, 0.5).describe()


def write_tile_folder(folder, footprints, mpp=0.5, index=True):
    folder.mkdir(parents=True)
    rows = []
    for i, f in enumerate(footprints):
        name = f"t{i:03d}.png"
        save_png(folder / name, np.full((32, 32, 3), 100 + i % 50, np.uint8))
        rows.append({"file": name, "slide": f.slide, "level": f.level, "y": f.y, "x": f.x,
                     "read_px": f.size, "mpp": mpp, "tissue_fraction": 1.0})  # fmt: skip
    if index:
        with open(folder / "index.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=INDEX_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    return folder


def test_tile_folders_with_an_index_are_split_without_overlap(tmp_path):
    tiles = overlapping_grid(n=8)
    a = write_tile_folder(tmp_path / "a", tiles)
    b = write_tile_folder(tmp_path / "b", tiles, index=False)
    split = unpaired_from_folders(a, b, test_fraction=0.1)
    where = {f"t{i:03d}.png": f for i, f in enumerate(tiles)}
    train = [where[p.name] for p in split.train_a]
    test = [where[p.name] for p in split.test_a]
    assert test and train
    assert not any(t.intersects(f) for t in test for f in train)
    assert "spatial blocks" in split.description and "s.svs" in split.description
    # a plain folder keeps the file-level split and says so
    assert "split by file name, tiles may overlap" in split.description
    (a / "extra.png").write_bytes((a / "t000.png").read_bytes())
    with pytest.raises(ValueError, match="extra.png"):
        split_folder(a, 0.1)


def test_pixel_size_comes_from_the_index_and_must_agree(tmp_path):
    a = write_tile_folder(tmp_path / "a", overlapping_grid(n=2), mpp=1.0)
    b = write_tile_folder(tmp_path / "b", overlapping_grid(n=2), mpp=0.5)
    plain = write_tile_folder(tmp_path / "c", overlapping_grid(n=2), index=False)
    assert (folder_mpp(a), folder_mpp(b), folder_mpp(plain)) == (1.0, 0.5, None)
    assert resolve_mpp(None, {"a": 1.0, "c": None}) == 1.0
    assert resolve_mpp(0.5, {"c": None}) == 0.5
    assert resolve_mpp(None, {"c": None}) is None
    with pytest.raises(ValueError, match="different pixel sizes"):
        resolve_mpp(None, {"a": 1.0, "b": 0.5})
    with pytest.raises(ValueError, match="contradicts"):
        resolve_mpp(0.5, {"a": 1.0})


def test_pairs_are_split_by_blocks_with_a_guard_band(tmp_path):
    from PIL import Image

    from napari_virtualstain.core.train.pairs import PairSpec, iter_make_pairs
    from napari_virtualstain.core.train.tiles import TileSpec
    from tests.support.train_tiles import colour_transform, texture

    he = texture(4, 256)
    Image.fromarray(he).save(tmp_path / "he.png")
    Image.fromarray(colour_transform(he)).save(tmp_path / "ihc.png")
    spec = PairSpec(TileSpec(64, 32, None, 0.5), ssim_min=-1.0, test_fraction=0.2)
    progress = list(
        iter_make_pairs(tmp_path / "he.png", tmp_path / "ihc.png", tmp_path / "o", spec)
    )
    assert progress[-1].details["kept"] == 49  # a 7 x 7 grid at stride 32
    with open(tmp_path / "o" / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    feet = {p: [Footprint("he", 0, int(r["y"]), int(r["x"]), 64) for r in rows if r["part"] == p]
            for p in ("train", "test", "guard")}  # fmt: skip
    assert feet["test"] and feet["train"] and feet["guard"]
    assert not any(t.intersects(f) for t in feet["test"] for f in feet["train"])
    split = load_bci_layout(tmp_path / "o")
    assert (len(split.train), len(split.test)) == (len(feet["train"]), len(feet["test"]))
    assert "spatial blocks" in split.description
    assert not (tmp_path / "o" / "HE" / "pending").exists()
