"""Tissue crops: a tile that is partly glass is stained only over its tissue (plus a margin)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_virtualstain.core.engine.tiling import TileGrid
from napari_virtualstain.core.engine.tissue import TissueConfig, tissue_crops
from tests.support import PACKAGE_DATA
from tests.support.models import tiny_loaded

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from napari_virtualstain.core.engine import StainConfig  # noqa: E402
from napari_virtualstain.core.engine.cache import MemoryLRU, TileCache  # noqa: E402
from napari_virtualstain.core.engine.lazy import open_virtual_stain  # noqa: E402
from napari_virtualstain.core.io import Slide  # noqa: E402


def test_a_crop_is_the_tissue_box_grown_on_the_stride_and_clipped_to_the_core():
    grid = TileGrid((128, 128), 64)
    mask = np.zeros((64, 64), bool)  # at downsample 2: one mask px = two grid px
    mask[3:20, 2:9] = True  # tile (0, 0): grid rows 6..40, cols 4..18
    mask[40:60, 40:64] = True  # tile (1, 1): the whole tile is tissue below row 80
    tissue = np.array([[True, False], [False, True]])
    crops = tissue_crops(mask, 2.0, grid, 1.0, tissue, margin_px=5, stride_px=4)
    # (6 - 5, 4 - 5) -> floor to 4 -> (0, 0); (40 + 5, 18 + 5) -> ceil to 4 -> (48, 24)
    assert crops[0, 0].tolist() == [0, 0, 48, 24]
    assert crops[0, 1].tolist() == [0, 64, 64, 64]  # background: the whole core
    assert crops[1, 1].tolist() == [64, 64, 64, 64]  # 80..128 grown covers > 3/4: whole
    wide = tissue_crops(mask, 2.0, grid, 1.0, tissue, margin_px=0, stride_px=4)
    assert wide[0, 0].tolist() == [0, 0, 44, 24]  # at least two mask px of margin


@pytest.fixture(scope="module")
def model():
    return tiny_loaded("tiny-crops", "1" * 64)


def open_half_glass(model, margin_px, **kw):
    he = tifffile.imread(PACKAGE_DATA / "OS-1-detail_HE.ome.tif")
    rgb = np.full((128, 256, 3), 246, np.uint8)
    rgb[:, :150] = he[:128, :150]  # tissue left of x=150: the tile at 128..192 is partly glass
    slide = Slide(path=None, name="half", levels=[da.from_array(rgb, chunks=(64, 64, 3))],
                  mpp=0.25)  # fmt: skip
    config = StainConfig(device="cpu", precision="fp32", tile_px=64,
                         tissue=TissueConfig(crop_margin_px=margin_px), **kw)  # fmt: skip
    vs = open_virtual_stain(slide, model, config=config, cache=TileCache(MemoryLRU(1 << 26)))
    pixels = []
    hook = vs.engine.module.register_forward_hook(
        lambda m, a, o: pixels.append(a[0].shape[-2] * a[0].shape[-1] * a[0].shape[0])
    )
    try:
        out = vs.levels[0].compute()
    finally:
        hook.remove()
    return vs, out, sum(pixels)


def test_cropped_tiles_match_whole_tiles_over_the_tissue_and_cost_fewer_pixels(model):
    cropped, out, px_cropped = open_half_glass(model, margin_px=8)
    whole, ref, px_whole = open_half_glass(model, margin_px=None)
    assert whole.crops is None and cropped.crops is not None
    assert cropped.crops[0, 2].tolist() == [0, 128, 64, 32]  # 150 + 8 -> 160 on the stride
    assert px_cropped < px_whole
    assert cropped.metadata["tiles"]["cropped_to_tissue"] == 2  # column 2, both rows
    assert whole.metadata["tiles"]["cropped_to_tissue"] == 0
    assert cropped.namespace != whole.namespace  # cached tiles hold glass outside the crop
    # Exact tiling (crop mode): the crop's pixels are the whole tile's pixels.
    assert cropped.plan.mode == "crop"
    assert np.array_equal(out[:, :160], ref[:, :160])
    assert (out[:, 160:192] == cropped.engine.config.background_rgb).all()


def test_crops_blend_with_their_neighbours(model):
    cropped, out, _ = open_half_glass(model, margin_px=8, blend="blend", halo_px=16)
    whole, ref, _ = open_half_glass(model, margin_px=None, blend="blend", halo_px=16)
    assert cropped.plan.mode == "blend" and cropped.crops is not None
    # Over the tissue, away from the crop's edge, the blend is the same.
    diff = np.abs(out[:, :140].astype(int) - ref[:, :140])
    assert diff.max() <= 1


def test_a_negative_crop_margin_is_refused():
    with pytest.raises(ValueError, match="crop_margin_px"):
        TissueConfig(crop_margin_px=-1)
