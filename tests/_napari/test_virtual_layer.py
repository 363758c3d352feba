"""The overlay in a real napari window (Xvfb): aligned, visible tiles only, GUI never blocked."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_virtualstain._napari.layers import slide_layer_data  # noqa: E402
from napari_virtualstain._napari.virtual_layer import VirtualOverlay  # noqa: E402
from napari_virtualstain.core.engine.cache import MemoryLRU, TileCache  # noqa: E402
from napari_virtualstain.core.engine.lazy import open_virtual_stain  # noqa: E402
from napari_virtualstain.core.io import open_slide  # noqa: E402
from napari_virtualstain.core.models import LoadedModel, ModelCard, build_generator  # noqa: E402
from napari_virtualstain.core.samples import sample_path  # noqa: E402


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


def setup(viewer, model, **kwargs):
    slide = open_slide(sample_path("he"))
    data, layer_kwargs, _ = slide_layer_data(slide)
    he = viewer.add_image(data, **layer_kwargs)
    vs = open_virtual_stain(
        slide, model, device="cpu", precision="fp32", cache=TileCache(MemoryLRU()), **kwargs
    )
    return he, vs


class Counter:
    def __init__(self, module):
        self.n = 0
        module.register_forward_hook(self)

    def __call__(self, module, args, out):
        self.n += args[0].shape[0]


@pytest.mark.slow
def test_overlay_is_aligned_above_the_he_and_differs_where_tissue_is(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    he, vs = setup(viewer, tiny())
    overlay = VirtualOverlay(viewer, vs, he, opacity=1.0, max_tiles=400)
    assert viewer.layers.index(overlay.layer) > viewer.layers.index(he)
    np.testing.assert_allclose(overlay.layer.scale, he.scale)
    np.testing.assert_allclose(overlay.layer.translate, he.translate)
    assert overlay.layer.metadata["virtualstain"]["model"]["name"] == "tiny"
    viewer.reset_view()
    qtbot.wait(50)
    overlay.schedule()
    qtbot.waitUntil(lambda: overlay.worker is None and overlay.tiles_done > 0, timeout=120_000)
    assert overlay.tiles_done == vs.grid.n_tiles  # the whole crop is in view
    with_overlay = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
    overlay.layer.visible = False
    he_only = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
    tissue = he_only.astype(int).sum(-1) < 600  # H&E tissue pixels in the screenshot
    assert tissue.mean() > 0.2
    diff = np.abs(with_overlay.astype(int) - he_only).sum(-1)
    assert np.median(diff[tissue]) > 30


@pytest.mark.slow
def test_only_tiles_in_view_reach_the_generator(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    he, vs = setup(viewer, tiny(tile_px=64))
    calls = Counter(vs.engine.module)
    overlay = VirtualOverlay(viewer, vs, he, margin_tiles=0)
    viewer.reset_view()
    viewer.camera.zoom *= 6  # a small part of the 1101 px crop: the camera event schedules
    qtbot.waitUntil(lambda: overlay.tiles_done > 0 and overlay.worker is None, timeout=120_000)
    box = overlay.visible_box()
    in_view = vs.grid.tiles_in_box(box)
    assert 0 < len(in_view) < vs.grid.n_tiles / 4
    assert calls.n == len(in_view) == overlay.tiles_done
    assert overlay._done == set(in_view)
    # panning back over computed tiles costs no generator call
    overlay._done.clear()
    overlay.schedule()
    qtbot.waitUntil(lambda: overlay.worker is None, timeout=60_000)
    assert calls.n == len(in_view)


@pytest.mark.slow
def test_gui_event_loop_keeps_running_while_a_slow_generator_computes(make_napari_viewer, qtbot):
    from qtpy.QtCore import QTimer

    viewer = make_napari_viewer(show=True)
    he, vs = setup(viewer, tiny(delay_s=0.3, tile_px=256))
    overlay = VirtualOverlay(viewer, vs, he, max_tiles=30)
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
    still_running = overlay.worker is not None and overlay.worker.is_running
    assert still_running  # the window above really overlapped the computation
    gaps = np.diff(ticks)
    assert len(ticks) > 20
    assert gaps.max() < 0.5, f"GUI thread blocked for {gaps.max():.2f} s"
    worker = overlay.worker
    overlay.stop()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    assert overlay.tiles_done < vs.grid.n_tiles  # stop really cancelled the rest
