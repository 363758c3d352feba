"""`make demo` with a display: napari with the samples and every dock widget of the plugin."""

import numpy as np

from napari_virtualstain.demo_gui import WIDGETS, open_demo_viewer


def test_demo_viewer_has_samples_and_all_dock_widgets(qtbot):
    viewer = open_demo_viewer(show=True)
    try:
        names = [layer.name for layer in viewer.layers]
        assert "OS-1-detail_HE" in names and "OS-2-ndpi_Ki67" in names
        docked = set(viewer.window.dock_widgets)
        for widget in WIDGETS:
            assert any(widget in title for title in docked), f"{widget} not docked: {docked}"
        shot = viewer.screenshot(canvas_only=True, flash=False)
        coloured = shot[..., :3].astype(int)
        assert (coloured.max(-1) - coloured.min(-1) > 25).mean() > 0.1
        # Side by side: the Ki-67 layer starts right of the H&E, in µm.
        he, ki = viewer.layers["OS-1-detail_HE"], viewer.layers["OS-2-ndpi_Ki67"]
        assert ki.extent.world[0][1] > he.extent.world[1][1]
        assert np.isclose(he.scale[-1], 0.227, atol=1e-3)
    finally:
        viewer.close()
