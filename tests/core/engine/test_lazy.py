"""The lazy virtual-stain pyramid: seam-free, visible-only, cached, background skipped."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from tests.support import PACKAGE_DATA

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from napari_virtualstain.core.engine.cache import DiskCache, MemoryLRU, TileCache  # noqa: E402
from napari_virtualstain.core.engine.lazy import open_virtual_stain  # noqa: E402
from napari_virtualstain.core.engine.tiling import Box  # noqa: E402
from napari_virtualstain.core.io import Slide  # noqa: E402
from napari_virtualstain.core.models import LoadedModel, ModelCard, build_generator  # noqa: E402
from tests.support.models import TileCounter  # noqa: E402

DATA = PACKAGE_DATA


@pytest.fixture(scope="module")
def he():
    return tifffile.imread(DATA / "OS-1-detail_HE.ome.tif")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=4, init="xavier")
    card = ModelCard(
        name="tiny", arch="resnet_6blocks", arch_kwargs={"ngf": 4}, mpp=0.25, tile_px=64,
        receptive_field_px=117, sha256="0" * 64,
    )  # fmt: skip
    return LoadedModel(module=module, card=card, path=None)


def make_slide(rgb, n_levels=1):
    levels = [da.from_array(rgb[:: 2**i, :: 2**i], chunks=(128, 128, 3)) for i in range(n_levels)]
    return Slide(path=None, name="he", levels=levels, mpp=0.25)


def fresh_cache(disk=None):
    return TileCache(MemoryLRU(1 << 28), DiskCache(disk) if disk else None)


def test_stitched_result_equals_whole_image_inference(he, model):
    rgb = he[100:292, 200:392]
    # halo 60 covers the receptive field (117 px): exact tiles, not the measured halo
    vs = open_virtual_stain(make_slide(rgb), model, device="cpu", precision="fp32", tile_px=64,
                            halo_px=60, cache=fresh_cache())  # fmt: skip
    assert vs.plan.mode == "crop" and vs.plan.norm == "slide"
    tiled = vs.levels[0].compute()
    whole = vs.engine.stain_image(rgb)  # one pass, same fixed statistics
    diff = np.abs(tiled.astype(int) - whole)
    assert diff.max() <= 1 and diff.mean() < 0.01


def boundary_step_error(tiled, whole, tile_px):
    """Per tile boundary: mean |step across it in ``tiled`` - the same step in ``whole``|."""
    t, w = tiled.astype(float), whole.astype(float)
    errors = []
    for b in range(tile_px, t.shape[1], tile_px):
        errors.append(np.abs((t[:, b] - t[:, b - 1]) - (w[:, b] - w[:, b - 1])).mean())
    for b in range(tile_px, t.shape[0], tile_px):
        errors.append(np.abs((t[b] - t[b - 1]) - (w[b] - w[b - 1])).mean())
    return np.array(errors)


def test_blending_leaves_no_step_at_tile_boundaries(he, model):
    rgb = he[:256, :256]
    kw = dict(device="cpu", precision="fp32", halo_px=16)
    blended = open_virtual_stain(make_slide(rgb), model, blend="blend", cache=fresh_cache(), **kw)
    naive = open_virtual_stain(make_slide(rgb), model, blend="crop", norm="tile",
                               cache=fresh_cache(), **{**kw, "halo_px": 0})  # fmt: skip
    assert blended.plan.mode == "blend" and blended.plan.blend_px == 8
    whole = blended.engine.stain_image(rgb)
    step_blend = boundary_step_error(blended.levels[0].compute(), whole, 64)
    step_naive = boundary_step_error(naive.levels[0].compute(), whole, 64)
    assert len(step_blend) == 6
    assert step_blend.max() < 2.0  # grey levels, every boundary
    assert step_naive.mean() > 3 * step_blend.mean()  # the metric does see real seams


def test_only_requested_tiles_reach_the_generator(he, model):
    vs = open_virtual_stain(make_slide(he[:512, :512]), model, device="cpu", precision="fp32", tile_px=64,
                            cache=fresh_cache())  # fmt: skip
    calls = TileCounter(vs.engine.module)
    view = Box(100, 100, 128, 192)
    wanted = vs.grid.tiles_in_box(view)
    done = [t for batch in vs.compute(wanted) for t in batch]
    assert calls.n == len(wanted) == 3 * 4
    assert sorted((r, c) for r, c, _ in done) == sorted(wanted)
    assert all(b.shape == (64, 64, 3) for _, _, b in done)


def test_cache_hits_and_restart_from_the_disk_cache(he, model, tmp_path):
    rgb = he[:256, :256]
    vs = open_virtual_stain(
        make_slide(rgb),
        model,
        device="cpu",
        precision="fp32",
        tile_px=64,
        cache=fresh_cache(tmp_path),
    )
    first = vs.levels[0][:128, :128].compute()
    calls = TileCounter(vs.engine.module)
    again = vs.levels[0][:128, :128].compute()
    assert calls.n == 0
    np.testing.assert_array_equal(first, again)
    # a new process: empty memory, same disk folder
    restarted = open_virtual_stain(make_slide(rgb), model, device="cpu", precision="fp32", tile_px=64,
                                   cache=fresh_cache(tmp_path))  # fmt: skip
    calls = TileCounter(restarted.engine.module)
    np.testing.assert_array_equal(restarted.levels[0][:128, :128].compute(), first)
    assert calls.n == 0 and restarted.cache.stats.disk_hits >= 4


def test_background_tiles_are_painted_and_never_inferred(he, model):
    rgb = np.full((256, 256, 3), 250, np.uint8)
    rgb[:128, :128] = he[:128, :128]  # one tissue quadrant = 4 tiles of 64
    vs = open_virtual_stain(
        make_slide(rgb), model, device="cpu", precision="fp32", tile_px=64, cache=fresh_cache()
    )
    assert vs.tissue.sum() == 4
    calls = TileCounter(vs.engine.module)
    out = vs.levels[0].compute()
    assert calls.n == 4 and vs.tiles_skipped == 12
    # background is the model's own glass colour (what it paints on this slide's glass)
    glass = vs.engine.stain_batch(np.full((1, 64, 64, 3), 250, np.uint8))[0, 16:48, 16:48]
    expected = np.median(glass.reshape(-1, 3), axis=0)
    assert np.abs(np.asarray(vs.engine.config.background_rgb) - expected).max() <= 1
    assert (out[160:, 160:] == vs.engine.config.background_rgb).all()
    assert vs.metadata["tiles"] == {"total": 16, "background": 12, "cropped_to_tissue": 0}
    white = open_virtual_stain(make_slide(rgb), model, device="cpu", precision="fp32", tile_px=64,
                               background_rgb=(255, 255, 255), cache=fresh_cache())  # fmt: skip
    assert (white.levels[0][160:, 160:].compute() == 255).all()


def test_norm_stats_and_glass_colour_are_measured_once_per_slide(he, model, tmp_path):
    rgb = np.full((256, 256, 3), 250, np.uint8)
    rgb[:128, :128] = he[:128, :128]
    rgb[0, 0] = 7  # a slide no other test opens: nothing is remembered yet
    seen = []
    handle = model.module.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    try:
        first = open_virtual_stain(make_slide(rgb), model, device="cpu", precision="fp32",
                                   tile_px=64, cache=fresh_cache(tmp_path))  # fmt: skip
        assert len(seen) >= 2  # norm statistics, then the glass tile
        n = len(seen)
        again = open_virtual_stain(make_slide(rgb), model, device="cpu", precision="fp32",
                                   tile_px=64, cache=fresh_cache(tmp_path))  # fmt: skip
        assert len(seen) == n
        assert again.plan.norm_sha256 == first.plan.norm_sha256
        assert again.engine.config.background_rgb == first.engine.config.background_rgb
        assert any((tmp_path / "calibration").glob("norm-*.safetensors"))
        assert any((tmp_path / "calibration").glob("glass-*.json"))
    finally:
        handle.remove()


def test_coarse_levels_show_only_computed_tiles(he, model):
    rgb = he[:256, :256]
    vs = open_virtual_stain(make_slide(rgb, n_levels=2), model, device="cpu", precision="fp32", tile_px=64,
                            cache=fresh_cache())  # fmt: skip
    assert len(vs.levels) == 2 and vs.levels[1].shape == (128, 128, 3)
    before = vs.levels[1].compute()
    assert set(np.unique(before)) == {153, 204}  # all "not yet computed"
    base = vs.levels[0][:128, :128].compute()
    after = vs.levels[1].compute()
    expected = base.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.abs(after[:64, :64].astype(float) - expected).mean() < 3
    assert set(np.unique(after[64:, 64:])) == {153, 204}
    assert vs.computed_fraction() == 0.25


def test_preview_is_labelled_and_provenance_is_complete(he, model):
    vs = open_virtual_stain(make_slide(he[:256, :256], n_levels=2), model, device="cpu", precision="fp32", tile_px=64,
                            preview_level=1, cache=fresh_cache())  # fmt: skip
    assert "PREVIEW" in vs.name and vs.metadata["preview"] is True
    assert vs.plan.level == 1 and vs.levels[0].shape == (128, 128, 3)
    meta = vs.metadata
    assert meta["model"]["sha256"] == "0" * 64 and meta["model"]["direction"] == "he->ki67"
    assert meta["device"] == "cpu" and meta["precision"] == "fp32"
    assert meta["precision_reason"] == "set by the user"
    assert meta["plan"]["tile_px"] == 64 and meta["plan"]["halo_px"] < 60  # measured
    assert "halo" in meta["plan"]["statement"] and "measured" in meta["plan"]["statement"]
    assert meta["norm_stats"]["sha256"] and "torch" in meta["versions"]


def test_the_same_engine_serves_ihc_to_virtual_he(model):
    ki67 = tifffile.imread(DATA / "OS-2-ndpi_Ki67.ome.tif")[:256, :256]
    from dataclasses import replace

    card = replace(model.card, direction="ki67->he", name="tiny-rev")
    reverse = LoadedModel(module=model.module, card=card, path=None)
    vs = open_virtual_stain(make_slide(ki67), reverse, device="cpu", precision="fp32", tile_px=64,
                            cache=fresh_cache())  # fmt: skip
    assert vs.name == "virtual he (tiny-rev)"
    assert vs.metadata["model"]["direction"] == "ki67->he"
    out = vs.levels[0].compute()
    assert out.shape == ki67.shape and np.abs(out.astype(int) - ki67).mean() > 10


def test_inference_tiles_larger_than_the_card_tile(he, model):
    rgb = np.full((256, 384, 3), 250, np.uint8)
    rgb[:, :128] = he[:256, :128]  # tissue only in the first engine tile column
    vs = open_virtual_stain(make_slide(rgb), model, device="cpu", precision="fp32",
                            tile_px=128, cache=fresh_cache())  # fmt: skip
    assert vs.plan.tile_px == 128 and vs.plan.card_tile_px == 64
    assert vs.tissue.shape == (2, 3) and vs.tissue[:, 0].all() and not vs.tissue[:, 2].any()
    whole = vs.engine.stain_image(rgb)  # crop mode, fixed statistics: still exact
    tiled = vs.levels[0].compute()
    assert np.abs(tiled[:, :128].astype(int) - whole[:, :128]).max() <= 1
