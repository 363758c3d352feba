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

        window = viewer.window._qt_window
        screen = window.screen().availableGeometry()
        if screen.width() >= 1600 and screen.height() >= 1000:
            assert window.width() >= 1600 and window.height() >= 1000
        else:
            assert window.isMaximized()
        assert all(o.layer.opacity == 0.6 for o in overlays)
        (title,) = [t for t in docked if "Virtual stain" in t]
        stain_widget = viewer.window.dock_widgets[title]
        assert not stain_widget.visibleRegion().isEmpty()  # the tab in front

        qtbot.wait(400)  # one throttled refresh
        shot_on = viewer.screenshot(canvas_only=True, flash=False)
        for o in overlays:
            o.layer.visible = False
        shot_off = viewer.screenshot(canvas_only=True, flash=False)
        changed = np.abs(shot_on[..., :3].astype(int) - shot_off[..., :3]).max(-1) > 30
        assert changed.mean() > 0.1, "the virtual stains do not change what is shown"

        # the demo's overlays are stopped from the widget like its own
        for o in overlays:
            stain_widget.layer_combo.setCurrentText(o.source.name)
            assert stain_widget.overlay is o and stain_widget.stop_button.isEnabled()
            engine = o.vs.engine  # how the demo's stain runs is shown as for the widget's own
            assert stain_widget.precision_note.text().startswith(f"{engine.precision} on ")
            assert o.vs.engine.card.direction in stain_widget.direction.text()
            stain_widget.stop()
            assert not o.following
    finally:
        for o in overlays:
            o.stop()
        qtbot.waitUntil(
            lambda: all(o.worker is None or not o.worker.is_running for o in overlays),
            timeout=60_000,
        )
        viewer.close()
