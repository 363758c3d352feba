"""The staining engine: batches, out-of-memory back-off, level / mpp planning."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_virtualstain.core.engine.stain import (  # noqa: E402
    MppUnknownError,
    StainConfig,
    StainEngine,
    make_plan,
)
from napari_virtualstain.core.io import Slide  # noqa: E402
from napari_virtualstain.core.models import LoadedModel, ModelCard, build_generator  # noqa: E402


def tiny(mpp=0.5, tile_px=64, receptive_field_px=117, **card_kwargs):
    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=4)
    card = ModelCard(
        name="tiny", arch="resnet_6blocks", arch_kwargs={"ngf": 4}, mpp=mpp, tile_px=tile_px,
        receptive_field_px=receptive_field_px, **card_kwargs,
    )  # fmt: skip
    return LoadedModel(module=module, card=card, path=None)


class OOMAbove(torch.nn.Module):
    """Raises torch's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.batches = inner, limit, []

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (forced, batch {x.shape[0]})")
        self.batches.append(x.shape[0])
        return self.inner(x)


def tiles(n=5, side=32):
    return np.random.default_rng(0).integers(0, 255, (n, side, side, 3), dtype=np.uint8)


def test_engine_maps_uint8_tiles_to_uint8_tiles():
    engine = StainEngine(tiny(), StainConfig(device="cpu", precision="fp32", batch_size=2))
    out = engine.stain_batch(tiles())
    assert out.shape == (5, 32, 32, 3) and out.dtype == np.uint8
    assert engine.tiles_inferred == 5
    assert engine.stride_px == 4


def test_out_of_memory_halves_the_batch_and_gives_the_same_result():
    lm = tiny()
    ref = StainEngine(lm, StainConfig(device="cpu", precision="fp32", batch_size=1))
    expected = ref.stain_batch(tiles())
    wrapped = OOMAbove(lm.module, limit=2)
    events = []
    engine = StainEngine(
        LoadedModel(module=wrapped, card=lm.card, path=None),
        StainConfig(device="cpu", precision="fp32", batch_size=8),
        on_event=events.append,
    )
    out = engine.stain_batch(tiles())
    np.testing.assert_array_equal(out, expected)
    assert engine.batch_size == 2
    assert len(events) == 1 and "batch 5; retrying with 2" in events[0]
    assert max(wrapped.batches) == 2


def test_a_single_tile_that_does_not_fit_raises_a_clear_memory_error():
    lm = tiny()
    engine = StainEngine(
        LoadedModel(module=OOMAbove(lm.module, limit=0), card=lm.card, path=None),
        StainConfig(device="cpu", precision="fp32", batch_size=4),
        on_event=lambda m: None,
    )
    with pytest.raises(MemoryError, match="smaller tile_px"):
        engine.stain_batch(tiles(2))


def slide(mpp, n_levels=3, side=512):
    base = np.full((side, side, 3), 200, np.uint8)
    levels = [da.from_array(base[:: 2**i, :: 2**i]) for i in range(n_levels)]
    return Slide(path=None, name="synthetic", levels=levels, mpp=mpp)


def test_plan_picks_the_level_matching_the_model_mpp():
    # receptive field measured from the architecture (not stated on the card)
    engine = StainEngine(tiny(mpp=0.5, receptive_field_px=None), StainConfig(device="cpu"))
    plan = make_plan(slide(0.25), engine)
    from napari_virtualstain.core.models import arch_receptive_field

    assert plan.receptive_field_px == arch_receptive_field("resnet_6blocks", ngf=4).rf_px > 64
    assert plan.level == 1 and plan.scale == 1.0 and not plan.preview
    assert "matches" in plan.statement
    assert plan.halo_px * 2 >= plan.receptive_field_px  # crop halo covers the field
    assert plan.tile_px % plan.stride_px == 0 and plan.halo_px % plan.stride_px == 0


def test_plan_resamples_when_no_level_matches_and_says_so():
    engine = StainEngine(tiny(mpp=0.5), StainConfig(device="cpu", tile_px=64))
    plan = make_plan(slide(0.3), engine)
    assert plan.level == 0 and plan.scale == pytest.approx(0.6)
    assert plan.resampled and "resampled x0.600" in plan.statement
    assert plan.tile_px == round(64 / 0.6)


def test_default_tile_grows_until_the_halo_is_a_third_of_the_work():
    engine = StainEngine(tiny(mpp=0.5), StainConfig(device="cpu"))  # card tile 64
    plan = make_plan(slide(0.5), engine)
    tile, halo = plan.model_tile_px, plan.model_halo_px
    assert tile > 64
    assert tile == 1024 or (tile + 2 * halo) ** 2 <= 1.5 * tile**2 + 1  # context <= 50 %
    assert (tile - 8 + 2 * halo) ** 2 > 1.5 * (tile - 8) ** 2  # and no larger than that needs
    per_tile = StainEngine(tiny(mpp=0.5), StainConfig(device="cpu", norm="tile"))
    assert make_plan(slide(0.5), per_tile).model_tile_px == 64  # output would depend on tile size
    assert engine.batch_size == 1  # CPU default


@pytest.mark.parametrize("stated_rf", [None, 300])
def test_self_attention_keeps_the_card_tile_and_cross_fades(stated_rf):
    torch.manual_seed(0)
    kwargs = {"ngf": 4, "n_blocks": 2, "attention": True}
    card = ModelCard(name="att", arch="pyramid_pix2pix", arch_kwargs=kwargs, mpp=0.5,
                     tile_px=64, receptive_field_px=stated_rf)  # fmt: skip
    loaded = LoadedModel(build_generator("pyramid_pix2pix", **kwargs), card, None)
    plan = make_plan(slide(0.5), StainEngine(loaded, StainConfig(device="cpu")))
    # global context: no halo makes tiles exact, and grown tiles made attention explode
    assert plan.model_tile_px == 64 and plan.mode == "blend" and plan.model_halo_px == 16
    assert "self-attention" in plan.statement


def test_unknown_mpp_is_refused_with_the_slide_name_or_given_explicitly():
    engine = StainEngine(tiny(mpp=0.5), StainConfig(device="cpu"))
    with pytest.raises(MppUnknownError, match="synthetic.*--mpp"):
        make_plan(slide(None), engine)
    assert make_plan(slide(None), engine, mpp=0.5).level == 0


def test_preview_runs_on_a_coarse_level_and_is_labelled():
    engine = StainEngine(tiny(mpp=0.5), StainConfig(device="cpu", preview_level=2))
    plan = make_plan(slide(0.25), engine)
    assert plan.preview and plan.level == 2 and plan.scale == 1.0
    assert plan.statement.startswith("PREVIEW")


def test_small_halo_switches_to_blending():
    engine = StainEngine(tiny(), StainConfig(device="cpu", halo_px=16))
    plan = make_plan(slide(0.5), engine)
    assert plan.mode == "blend" and plan.blend_px == 8


def test_config_validates():
    with pytest.raises(ValueError, match="precision"):
        StainConfig(precision="int4")
    with pytest.raises(ValueError, match="blend"):
        StainConfig(blend="smear")
    with pytest.raises(ValueError, match="batch_size"):
        StainConfig(batch_size=0)
