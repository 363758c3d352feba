"""Tissue mask and background tiles."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.engine.tiling import TileGrid
from napari_virtualstain.core.engine.tissue import TissueConfig, tissue_mask, tissue_tiles
from tests.support import PACKAGE_DATA

DATA = PACKAGE_DATA


def blob_image(h=256, w=256):
    rng = np.random.default_rng(0)
    img = np.full((h, w, 3), 245, np.uint8) + rng.integers(0, 8, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - 80) ** 2 + (xx - 90) ** 2 < 50**2
    img[inside] = (np.array([200, 110, 190]) + rng.normal(0, 8, (inside.sum(), 3))).clip(0, 255)
    return img, inside


def test_mask_finds_the_blob_and_not_the_glass():
    img, inside = blob_image()
    mask = tissue_mask(img)
    assert mask[inside].mean() > 0.97
    assert mask[~inside].mean() < 0.03


def test_glass_only_has_no_tissue():
    rng = np.random.default_rng(1)
    glass = (240 + rng.integers(0, 15, (128, 128, 3))).astype(np.uint8)
    assert not tissue_mask(glass).any()
    assert not tissue_mask(glass, TissueConfig(method="od")).any()


def test_tissue_tiles_maps_a_low_res_mask_to_the_grid():
    img, inside = blob_image()
    mask = tissue_mask(img)[::4, ::4]  # the mask at downsample 4
    grid = TileGrid((256, 256), tile_px=64)
    tiles = tissue_tiles(mask, 4.0, grid, 1.0)
    expected = np.array(
        [[inside[grid.core(r, c).slices].mean() >= 0.01 for c in range(4)] for r in range(4)]
    )
    assert (tiles == expected).all()
    assert 0 < tiles.sum() < 16


def test_real_he_crop_is_mostly_tissue():
    tifffile = pytest.importorskip("tifffile")
    rgb = tifffile.imread(DATA / "OS-1-detail_HE.ome.tif")
    frac = tissue_mask(rgb[::4, ::4]).mean()
    assert 0.3 < frac <= 1.0


def test_config_validates():
    with pytest.raises(ValueError, match="method"):
        TissueConfig(method="magic")
    with pytest.raises(ValueError, match="min_tile_fraction"):
        TissueConfig(min_tile_fraction=2.0)
