"""`make demo` with a display: napari with the samples, the demo pair's overlays and every dock."""

import numpy as np

from napari_virtualstain.demo_gui import OVERLAYS, WIDGETS, open_demo_viewer


def test_demo_viewer_has_samples_overlays_and_all_dock_widgets(qtbot):
    viewer, overlays = open_demo_viewer(show=True)
    try:
        docked = set(viewer.window.dock_widgets)
        for widget in WIDGETS:
            assert any(widget in title for title in docked), f"{widget} not docked: {docked}"
        he, ki = viewer.layers["OS-1-detail_HE"], viewer.layers["OS-2-ndpi_Ki67"]
        assert ki.extent.world[0][1] > he.extent.world[1][1]  # side by side, in µm
        assert np.isclose(he.scale[-1], 0.227, atol=1e-3)

        # Both overlays open off the GUI thread, sit on their sources and fill the view.
        qtbot.waitUntil(lambda: len(overlays) == 2, timeout=120_000)
        assert {o.source.name for o in overlays} == set(OVERLAYS)
        for o in overlays:
            assert np.allclose(
                o.layer.extent.world, o.source.extent.world, atol=o.source.scale[-1] * 4
            )
        qtbot.waitUntil(
            lambda: all(o.tiles_done > 0 and o.worker is None for o in overlays), timeout=300_000
        )

        shot_on = viewer.screenshot(canvas_only=True, flash=False)
        for o in overlays:
            o.layer.visible = False
        shot_off = viewer.screenshot(canvas_only=True, flash=False)
        changed = np.abs(shot_on[..., :3].astype(int) - shot_off[..., :3]).max(-1) > 30
        assert changed.mean() > 0.1, "the virtual stains do not change what is shown"
    finally:
        for o in overlays:
            o.stop()
        qtbot.waitUntil(
            lambda: all(o.worker is None or not o.worker.is_running for o in overlays),
            timeout=60_000,
        )
        viewer.close()
