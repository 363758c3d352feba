"""Folder layouts (unpaired, BCI) and the SSIM pair filter on constructed pairs."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.train.layouts import (
    PairedSplit,
    load_bci_layout,
    load_unpaired_layout,
    split_files,
    unpaired_from_folders,
    write_bci_layout,
    write_unpaired_layout,
)
from napari_virtualstain.core.train.pairs import PairSpec, filter_pairs, iter_make_pairs, pair_ssim
from napari_virtualstain.core.train.tiles import TileSpec, load_png, save_png
from tests.support.train_tiles import texture


def nuclei_image(seed: int, size: int = 96) -> np.ndarray:
    """Dark round 'nuclei' on a pink background: structure that survives a colour change.
    The stroma noise is strong enough that unrelated tiles do not match."""
    return texture(seed, size, n_blobs=12, radius_px=5, margin_px=6, blob_rgb=(70, 40, 120),
                   noise=12.0)  # fmt: skip


def as_ihc(he: np.ndarray) -> np.ndarray:
    """A known colour transform: pink -> pale blue-grey, purple nuclei -> brown."""
    out = he.astype(np.float32) @ np.array([[0.5, 0.4, 0.3], [0.3, 0.4, 0.2], [0.2, 0.1, 0.3]])
    return np.clip(out + 30, 0, 255).astype(np.uint8)


def write_tiles(folder, images, names):
    folder.mkdir(parents=True, exist_ok=True)
    for img, name in zip(images, names, strict=True):
        save_png(folder / name, img)


def test_ssim_filter_keeps_registered_pairs_and_drops_unrelated():
    he = [nuclei_image(i) for i in range(4)]
    pairs = [(f"p{i}", he[i], as_ihc(he[i])) for i in range(4)]
    pairs += [("shifted", he[0], as_ihc(he[1]))]  # not the same tissue
    kept = list(filter_pairs(pairs, ssim_min=0.4))
    assert [k[0] for k in kept] == ["p0", "p1", "p2", "p3"]
    assert all(k[3] > 0.4 for k in kept)
    assert pair_ssim(he[0], as_ihc(he[1])) < 0.4
    with pytest.raises(ValueError, match="differ in shape"):
        pair_ssim(he[0], he[1][:50])


def test_make_pairs_from_two_slides_writes_a_bci_layout(tmp_path):
    from PIL import Image

    he = np.concatenate([nuclei_image(1, 128), np.full((128, 128, 3), 248, np.uint8)], axis=1)
    ihc = as_ihc(he)
    ihc[:, 64:128] = as_ihc(nuclei_image(7, 128))[:, :64]  # right tissue half does not match
    Image.fromarray(he).save(tmp_path / "he.png")
    Image.fromarray(ihc).save(tmp_path / "ihc.png")
    spec = PairSpec(TileSpec(tile_px=64, overlap_px=0, mpp=None, min_tissue=0.5), ssim_min=0.4,
                    test_fraction=0.0)  # fmt: skip
    progress = list(
        iter_make_pairs(tmp_path / "he.png", tmp_path / "ihc.png", tmp_path / "out", spec)
    )
    assert (progress[-1].done, progress[-1].total) == (8, 8)  # 2 x 4 grid positions
    split = load_bci_layout(tmp_path / "out")
    # glass tiles are cleaned away; of the 4 tissue tiles the 2 mismatched ones fail the SSIM
    assert {p[0].name for p in split.train} == {"he_y0_x0.png", "he_y64_x0.png"}
    for he_path, ihc_path in split.train:
        assert he_path.name == ihc_path.name
        assert pair_ssim(load_png(he_path), load_png(ihc_path)) > 0.4
    with pytest.raises(FileExistsError, match="pairs.csv"):
        list(iter_make_pairs(tmp_path / "he.png", tmp_path / "ihc.png", tmp_path / "out", spec))


def test_unpaired_layout_round_trip(tmp_path):
    write_tiles(
        tmp_path / "a", [nuclei_image(i) for i in range(20)], [f"a{i}.png" for i in range(20)]
    )
    write_tiles(
        tmp_path / "b", [nuclei_image(i) for i in range(5)], [f"b{i}.png" for i in range(5)]
    )
    split = unpaired_from_folders(tmp_path / "a", tmp_path / "b", test_fraction=0.3)
    assert len(split.train_a) + len(split.test_a) == 20
    assert 0 < len(split.test_a) < 20
    assert not set(split.train_a) & set(split.test_a)
    # the hold-out is a function of the name, not of the order or the run
    assert split_files(sorted(split.train_a + split.test_a, reverse=True), 0.3)[1] == tuple(
        sorted(split.test_a, reverse=True)
    )
    write_unpaired_layout(split, tmp_path / "layout")
    again = load_unpaired_layout(tmp_path / "layout")
    assert [p.name for p in again.train_a] == [p.name for p in split.train_a]
    assert len(again.train_b) + len(again.test_b) == 5
    with pytest.raises(FileExistsError):
        write_unpaired_layout(split, tmp_path / "layout")  # never overwrites
    with pytest.raises(FileNotFoundError, match="trainA"):
        load_unpaired_layout(tmp_path / "a")


def test_bci_layout_matches_by_name_and_reports_orphans(tmp_path):
    imgs = [nuclei_image(i) for i in range(3)]
    write_tiles(tmp_path / "he", imgs, ["x.png", "y.png", "z.png"])
    write_tiles(tmp_path / "ihc", [as_ihc(i) for i in imgs], ["x.png", "y.png", "z.png"])
    pairs = tuple((tmp_path / "he" / n, tmp_path / "ihc" / n) for n in ("x.png", "y.png", "z.png"))
    write_bci_layout(PairedSplit(train=pairs[:2], test=pairs[2:]), tmp_path / "bci")
    split = load_bci_layout(tmp_path / "bci")
    assert [p[0].name for p in split.train] == ["x.png", "y.png"]
    assert np.array_equal(load_png(split.test[0][1]), as_ihc(imgs[2]))
    (tmp_path / "bci" / "IHC" / "train" / "y.png").unlink()
    with pytest.raises(ValueError, match=r"y\.png"):
        load_bci_layout(tmp_path / "bci")
    with pytest.raises(FileNotFoundError, match="HE/train"):
        load_bci_layout(tmp_path / "he")


@pytest.mark.slow
def test_registered_pairs_keep_more_than_pairs_taken_as_given(tmp_path):
    """A shifted adjacent 'section': registration (residual-map issue) realigns the IHC."""
    import tifffile

    from napari_virtualstain.core.io import open_slide
    from napari_virtualstain.core.train.pairs import register_for_pairs
    from tests.support.train_tiles import colour_transform, texture

    he = np.full((400, 400, 3), 245, np.uint8)
    he[40:360, 40:360] = texture(3, 320)
    ihc = colour_transform(np.roll(he, (10, -14), axis=(0, 1)))
    meta = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    for name, img in (("he", he), ("ihc", ihc)):
        tifffile.imwrite(
            tmp_path / f"{name}.ome.tif", img, photometric="rgb", ome=True, metadata=meta
        )
    he_slide, ihc_slide = open_slide(tmp_path / "he.ome.tif"), open_slide(tmp_path / "ihc.ome.tif")
    registration = register_for_pairs(he_slide, ihc_slide)
    spec = PairSpec(TileSpec(64, 0, 0.5, 0.5), ssim_min=0.4, test_fraction=0.0)
    kept = {}
    for label, reg in (("registered", registration), ("as_given", None)):
        progress = list(iter_make_pairs(he_slide, ihc_slide, tmp_path / label, spec, reg))
        kept[label] = progress[-1].details["kept"]
    assert kept["registered"] >= 4 * max(kept["as_given"], 1)
    split = load_bci_layout(tmp_path / "registered")
    assert all(pair_ssim(load_png(h), load_png(i)) > 0.4 for h, i in split.train)
