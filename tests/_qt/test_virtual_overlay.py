"""The overlay in a real napari window (Xvfb): aligned, visible tiles only, writes off the GUI
thread, a plain message beyond the tile budget, the whole-slide run, a quiet close."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_virtualstain._napari.layers import slide_layer_data  # noqa: E402
from napari_virtualstain._napari.virtual_layer import OverlayBuffers  # noqa: E402
from napari_virtualstain._qt.virtual_overlay import VirtualOverlay, fill_whole_slide  # noqa: E402
from napari_virtualstain.core.engine.cache import DiskCache, MemoryLRU, TileCache  # noqa: E402
from napari_virtualstain.core.engine.lazy import open_virtual_stain  # noqa: E402
from napari_virtualstain.core.io import Slide, open_slide  # noqa: E402
from napari_virtualstain.core.models import LoadedModel, ModelCard, build_generator  # noqa: E402
from napari_virtualstain.core.progress import drain  # noqa: E402
from napari_virtualstain.core.samples import sample_path  # noqa: E402
from tests.support.models import TileCounter  # noqa: E402


class Slow(torch.nn.Module):
    """A generator that takes ``delay_s`` per forward pass (a slow GPU-less machine)."""

    def __init__(self, inner, delay_s):
        super().__init__()
        self.inner, self.delay_s = inner, delay_s

    def forward(self, x):
        time.sleep(self.delay_s)
        return self.inner(x)


def tiny(delay_s=0.0, tile_px=128):
    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=4, init="xavier")
    if delay_s:
        module = Slow(module, delay_s)
    card = ModelCard(name="tiny", arch="resnet_6blocks", arch_kwargs={"ngf": 4}, mpp=0.227,
                     tile_px=tile_px, receptive_field_px=117)  # fmt: skip
    return LoadedModel(module=module, card=card, path=None)


def setup(viewer, model, cache=None, glass=False, **kwargs):
    slide = open_slide(sample_path("he"))
    if glass:  # the right half of the crop replaced by bright glass
        rgb = np.asarray(slide.levels[0]).copy()
        rgb[:, rgb.shape[1] // 2 :] = (238, 236, 240)
        slide = Slide(path=None, name="he-glass", levels=[da.from_array(rgb)], mpp=slide.mpp)
    data, layer_kwargs, _ = slide_layer_data(slide)
    he = viewer.add_image(data, **layer_kwargs)
    kwargs.setdefault("tile_px", model.card.tile_px)  # a fine grid: many tiles per view
    vs = open_virtual_stain(slide, model, device="cpu", precision="fp32",
                            cache=cache or TileCache(MemoryLRU()), **kwargs)  # fmt: skip
    buffers = OverlayBuffers(vs)
    buffers.paint_background()
    return he, vs, buffers


def idle(overlay):
    return overlay.worker is None


@pytest.mark.slow
def test_overlay_is_aligned_above_the_he_and_differs_where_tissue_is(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    he, vs, buffers = setup(viewer, tiny())
    overlay = VirtualOverlay(viewer, vs, he, buffers, opacity=1.0, budget_tiles=400)
    assert viewer.layers.index(overlay.layer) > viewer.layers.index(he)
    np.testing.assert_allclose(overlay.layer.scale, he.scale)
    assert tuple(overlay.layer.units) == tuple(he.units)  # one physical world: no napari warning
    np.testing.assert_allclose(overlay.layer.translate, he.translate)
    assert overlay.layer.metadata["virtualstain"]["model"]["name"] == "tiny"
    viewer.reset_view()
    qtbot.wait(50)
    overlay.schedule()
    qtbot.waitUntil(lambda: idle(overlay) and overlay.tiles_done > 0, timeout=120_000)
    assert overlay.tiles_done == int(vs.tissue.sum())  # the whole crop is in view
    assert overlay.status == "view complete" and not overlay.visible_tiles()
    qtbot.wait(400)  # one throttled refresh
    with_overlay = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
    overlay.layer.visible = False
    he_only = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
    tissue = he_only.astype(int).sum(-1) < 600  # H&E tissue pixels in the screenshot
    assert tissue.mean() > 0.2
    diff = np.abs(with_overlay.astype(int) - he_only).sum(-1)
    assert np.median(diff[tissue]) > 30


@pytest.mark.slow
def test_only_tissue_tiles_in_view_reach_the_generator(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    he, vs, buffers = setup(viewer, tiny(tile_px=64))
    calls = TileCounter(vs.engine.module)
    overlay = VirtualOverlay(viewer, vs, he, buffers, margin_tiles=0)
    viewer.reset_view()
    viewer.scene.camera.zoom *= 6  # a small part of the 1101 px crop: the camera event schedules
    qtbot.waitUntil(lambda: overlay.tiles_done > 0 and idle(overlay), timeout=120_000)
    in_view = vs.grid.tiles_in_box(overlay.visible_box())
    tissue = [t for t in in_view if vs.is_tissue(*t)]
    assert 0 < len(in_view) < vs.grid.n_tiles / 4
    assert calls.n == len(tissue) == overlay.tiles_done
    assert set(in_view) <= overlay.buffers.written[overlay.data_level()]
    # a view over tiles computed before costs no generator call (served from the cache)
    overlay.buffers.written[overlay.data_level()].clear()
    overlay.schedule()
    qtbot.waitUntil(lambda: idle(overlay) and overlay.status == "view complete", timeout=60_000)
    assert calls.n == len(tissue)


@pytest.mark.slow
def test_beyond_the_budget_it_says_so_and_paints_glass(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    he, vs, buffers = setup(viewer, tiny(tile_px=64), glass=True)
    assert 0 < vs.tissue.sum() < vs.grid.n_tiles
    calls = TileCounter(vs.engine.module)
    overlay = VirtualOverlay(viewer, vs, he, buffers, budget_tiles=3)
    viewer.reset_view()
    overlay.schedule()
    qtbot.waitUntil(lambda: idle(overlay), timeout=60_000)
    assert calls.n == 0
    assert "tissue tiles" in overlay.status and "Whole slide in background" in overlay.status
    assert "zoom in" in overlay.status
    # background tiles already carry the model's glass colour, opaque; tissue is transparent
    level = buffers.levels[-1]
    px = np.asarray(level[:])
    glass = px[..., 3] == 255
    assert glass.any() and (px[glass][:, :3] == vs.engine.config.background_rgb).all()
    assert (px[..., 3] == 0).any()


def test_whole_slide_fills_every_tissue_tile_and_resumes(tmp_path):
    slide = open_slide(sample_path("he"))
    model = tiny(tile_px=128)
    kwargs = dict(device="cpu", precision="fp32", cache=TileCache(MemoryLRU(), DiskCache(tmp_path)))
    vs = open_virtual_stain(slide, model, tile_px=128, **kwargs)
    buffers = OverlayBuffers(vs)
    n_tissue = int(vs.tissue.sum())
    gen = fill_whole_slide(vs, buffers, lambda: None)
    first = next(gen)
    assert first.total == n_tissue
    gen.close()  # cancelled at once: nothing computed yet
    reports = []
    inferred = drain(fill_whole_slide(vs, buffers, lambda: (0.0, 0.0)), reports.append)
    assert inferred == n_tissue and reports[-1].done == n_tissue
    small = buffers.small_levels()[0]
    assert {t for t in vs.grid.tiles() if vs.is_tissue(*t)} <= buffers.written[small]
    # a new session (empty memory, same disk cache) computes nothing again
    again = open_virtual_stain(slide, model, device="cpu", precision="fp32", tile_px=128,
                               cache=TileCache(MemoryLRU(), DiskCache(tmp_path)))  # fmt: skip
    assert drain(fill_whole_slide(again, OverlayBuffers(again), lambda: None)) == 0


@pytest.mark.slow
def test_gui_event_loop_keeps_running_while_a_slow_generator_computes(make_napari_viewer, qtbot):
    from qtpy.QtCore import QTimer

    viewer = make_napari_viewer(show=True)
    he, vs, buffers = setup(viewer, tiny(delay_s=0.3, tile_px=256))
    overlay = VirtualOverlay(viewer, vs, he, buffers, budget_tiles=30)
    viewer.reset_view()
    qtbot.wait(50)
    ticks = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    overlay.schedule()
    qtbot.wait(1500)
    timer.stop()
    assert overlay.worker is not None and overlay.worker.is_running  # really overlapped
    gaps = np.diff(ticks)
    assert len(ticks) > 20
    assert gaps.max() < 0.5, f"GUI thread blocked for {gaps.max():.2f} s"
    worker = overlay.worker
    overlay.stop()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    assert overlay.tiles_done < int(vs.tissue.sum())  # stop really cancelled the rest


@pytest.mark.slow
def test_closing_the_viewer_mid_run_is_quiet(make_napari_viewer, qtbot, capfd):
    viewer = make_napari_viewer(show=True)
    he, vs, buffers = setup(viewer, tiny(delay_s=0.2, tile_px=256))
    overlay = VirtualOverlay(viewer, vs, he, buffers, budget_tiles=30)
    viewer.reset_view()
    overlay.schedule()
    qtbot.waitUntil(lambda: overlay.tiles_done > 0, timeout=60_000)
    worker = overlay.worker
    viewer.close()
    assert overlay.closed
    qtbot.waitUntil(lambda: worker is None or not worker.is_running, timeout=60_000)
    qtbot.wait(600)
    assert "Traceback" not in capfd.readouterr().err
