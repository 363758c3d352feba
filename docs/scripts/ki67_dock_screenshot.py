"""Screenshot of the Ki-67 dock on the bundled OS-2 Ki-67 sample, for docs/images.

Run under Xvfb from the repository root::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/scripts/ki67_dock_screenshot.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_virtualstain._napari.layers import slide_layer_data
from napari_virtualstain._qt.ki67_widget import Ki67Widget
from napari_virtualstain.core.io import open_slide
from napari_virtualstain.core.samples import sample_path

OUT = Path(__file__).resolve().parents[1] / "images"


def main() -> int:
    slide = open_slide(sample_path("ki67"))
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    data, kwargs, _ = slide_layer_data(slide, name="OS-2 Ki-67")
    viewer.add_image(data, **kwargs)
    h, w = np.asarray(slide.levels[0].shape[:2]) * slide.mpp
    rois = [
        np.array([[0, 0], [0, w], [h, w], [h, 0]]),
        np.array([[h / 2, w / 2], [h / 2, w], [h, w], [h, w / 2]]),
    ]
    viewer.add_shapes(rois, shape_type="rectangle", name="ROIs", edge_color="yellow",
                      face_color="transparent", edge_width=6, units=kwargs["units"],
                      features={"name": ["whole", "bottom right"]})  # fmt: skip
    widget = Ki67Widget(viewer)
    viewer.window.add_dock_widget(widget, name="Ki-67", area="right")
    widget.shapes_combo.setCurrentText("ROIs")
    widget.threshold_edit.setText("0.2 0.4 0.6")
    app = QApplication.instance()
    widget.compute()
    while widget.worker is not None:
        app.processEvents()
    print(widget.status.text())
    for row in widget.table_rows():
        print(row)
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    OUT.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUT / "ki67_viewer_dock.png"), canvas_only=False, flash=False)
    widget.grab().save(str(OUT / "ki67_dock_histogram.png"))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
