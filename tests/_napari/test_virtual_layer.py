"""Pure overlay helpers: area shrink, RGBA pyramid buffers, geometry (no display needed)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_virtualstain._napari.virtual_layer import OverlayBuffers, shrink  # noqa: E402
from napari_virtualstain.core.engine.cache import MemoryLRU, TileCache  # noqa: E402
from napari_virtualstain.core.engine.lazy import open_virtual_stain  # noqa: E402
from napari_virtualstain.core.io import Slide  # noqa: E402
from napari_virtualstain.core.models import LoadedModel, ModelCard, build_generator  # noqa: E402


def test_shrink_is_the_area_mean():
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    expected = block.reshape(16, 4, 12, 4, 3).astype(float).mean(axis=(1, 3))
    np.testing.assert_allclose(shrink(block, (16, 12)), np.round(expected), atol=1)
    assert shrink(block, (64, 48)) is block
    uneven = shrink(block, (20, 15))  # bins of 3 or 4 rows / columns
    assert uneven.shape == (20, 15, 3) and abs(uneven.mean() - block.mean()) < 2


@pytest.fixture(scope="module")
def vs():
    import dask.array as da

    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=4, init="xavier")
    card = ModelCard(name="tiny", arch="resnet_6blocks", arch_kwargs={"ngf": 4}, tile_px=64,
                     receptive_field_px=117)  # fmt: skip
    rgb = np.full((256, 256, 3), 245, np.uint8)
    rgb[:128, :128] = np.random.default_rng(1).integers(60, 160, (128, 128, 3))
    levels = [da.from_array(rgb), da.from_array(rgb[::2, ::2].copy())]
    slide = Slide(path=None, name="s", levels=levels, mpp=None)
    loaded = LoadedModel(module=module, card=card, path=None)
    return open_virtual_stain(slide, loaded, device="cpu", precision="fp32", tile_px=64,
                              cache=TileCache(MemoryLRU()))  # fmt: skip


def test_background_is_painted_opaque_in_glass_and_tissue_stays_transparent(vs):
    buffers = OverlayBuffers(vs)
    buffers.paint_background()
    glass = np.asarray(vs.engine.config.background_rgb)
    for level in buffers.levels:
        px = np.asarray(level[:])
        h, w = px.shape[:2]
        assert (px[: h // 2 - 1, : w // 2 - 1, 3] == 0).all()  # tissue: not computed yet
        assert (px[h // 2 + 1 :, :, 3] == 255).all()
        assert (px[h // 2 + 1 :, :, :3] == glass).all()


def test_a_written_tile_lands_in_every_level(vs):
    buffers = OverlayBuffers(vs)
    block = vs.block(0, 0)
    buffers.write_block(0, 0, block)
    np.testing.assert_array_equal(np.asarray(buffers.levels[0][:64, :64, :3]), block)
    coarse = np.asarray(buffers.levels[1][:32, :32])
    assert (coarse[..., 3] == 255).all()
    assert np.abs(coarse[..., :3].astype(float) - shrink(block, (32, 32))).max() <= 1
    assert (0, 0) in buffers.written[0] and (0, 0) in buffers.written[1]
    buffers.write_block(0, 1, vs.block(0, 1), from_index=1)  # zoomed out: coarse level only
    assert (0, 1) in buffers.written[1] and (0, 1) not in buffers.written[0]
    assert (np.asarray(buffers.levels[0][:64, 64:128, 3]) == 0).all()
