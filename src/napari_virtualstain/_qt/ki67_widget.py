"""The "Ki-67" dock widget: ROIs in, nuclei and the tumour ratio out, real beside virtual.

It reads its controls, runs one core job through ``WorkerRunner`` (napari's activity dock,
Cancel), and on completion only adds layers prepared in the worker: a Labels layer of nuclei
(red positive, blue negative) and optional centroid points, both with a ``features`` table.
The results table puts index, bin, grade and Δ first; the histogram shows each ROI's nuclear
DAB OD against the thresholds. Double-clicking a nucleus flips its class and recounts.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from napari_virtualstain.core.segmentation import DEFAULT_SEGMENTER

from .dab_histogram import DabHistogramView
from .ki67_actions import Ki67Actions
from .ki67_table import ResultsTable
from .layouts import column, row, wrapped_label
from .runner import WorkerRunner
from .viewer_access import unproxied, watch_layers

WHOLE_IMAGE = "(whole image)"
SAME_LAYER = "— (the measured layer)"
NOTHING = "— (nothing)"


class Ki67Widget(Ki67Actions, QWidget):
    """Pick an image layer, ROIs, segmenter, thresholds and stains; compute the Ki-67 ratio."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = unproxied(napari_viewer)  # see viewer_access
        self.runs: dict[str, object] = {}  # image layer name -> RatioRun
        self.histograms: dict[str, list] = {}
        self.outlines: dict[str, dict] = {}
        self.roi_sources: dict[str, str] = {}  # image layer name -> the ROI layer of its run
        # (image, ROI layer) -> (run, outlines): every run's results stay in the table, while
        # the nuclei layer, flips and exports follow each image's latest run (``runs``)
        self.kept: dict[tuple[str, str], tuple] = {}
        self._mpp_layer = ""  # the layer whose pixel size the spin box shows
        self._job = None
        self._showing = None  # the results being shown, over several event-loop turns
        self._typed_mpp: dict[str, float] = {}
        self._build()
        self.runner = WorkerRunner(self.status, self.cancel_button, [self.run_button])
        watch_layers(self.viewer, self._refresh_layers)
        self._refresh_layers()

    @property
    def worker(self):
        """The running job's worker until its results are shown (or it failed), else None."""
        if self._job is None and self.runner.running:
            return self.runner.worker  # results shown, the thread still winding down
        return self._job

    # -- controls ------------------------------------------------------------------------------
    def _build(self) -> None:
        from napari_virtualstain.core.segmentation import BACKENDS

        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(self._mpp_from_layer)
        self.shapes_combo = QComboBox()
        self.exclude_combo = QComboBox()
        self.exclude_combo.setToolTip(
            "A Shapes layer of regions to leave out of every ROI (necrosis, folds): their "
            "nuclei and area are not counted (imported GeoJSON holes land here)"
        )
        self.segment_on_combo = QComboBox()
        self.segment_on_combo.setToolTip(
            "Segment nuclei on another RGB layer of the same size (e.g. a virtual H&E made from "
            "this Ki-67) and measure DAB on the chosen image"
        )
        self.segmenter_combo = QComboBox()
        self.segmenter_combo.addItems(list(BACKENDS))
        # The default is a measured choice (docs/ki67.md), not the registry's order.
        self.segmenter_combo.setCurrentText(DEFAULT_SEGMENTER)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("model folder / file (StarDist, Cellpose)")
        self.threshold_edit = QLineEdit("0.2")
        self.threshold_edit.setToolTip("DAB OD: one value, or three (1+ 2+ 3+) e.g. 0.2 0.4 0.6")
        self.stains_combo = QComboBox()
        self.stains_combo.addItems(["qupath", "skimage", "estimate"])
        self.mpp_spin = QDoubleSpinBox()
        self.mpp_spin.setDecimals(4)
        self.mpp_spin.setRange(0.0, 100.0)
        self.mpp_spin.setSuffix(" µm/px")
        self.mpp_spin.setToolTip("Level-0 pixel size of the measured layer (from its scale/units)")
        self.points_check = QCheckBox("Add centroid points")
        self.force_check = QCheckBox("Measure anyway if the stain is not H-DAB")
        self.force_check.setToolTip("Results are then marked 'stain not verified', ungraded")
        form = QFormLayout()
        for label, widget in (
            ("Image", self.image_combo), ("ROIs", self.shapes_combo),
            ("Exclude", self.exclude_combo),
            ("Segment nuclei on", self.segment_on_combo),
            ("Segmenter", self.segmenter_combo), ("Model", self.model_edit),
            ("DAB thresholds", self.threshold_edit), ("Stain vectors", self.stains_combo),
            ("Pixel size", self.mpp_spin),
        ):  # fmt: skip
            form.addRow(label, widget)
        self.run_button = QPushButton("Compute")
        self.run_button.clicked.connect(self.compute)
        self.cancel_button = QPushButton("Cancel")
        self.status = wrapped_label()
        self.table = ResultsTable()
        self.histogram = DabHistogramView()
        self.hotspot_spin = QDoubleSpinBox()
        self.hotspot_spin.setRange(20.0, 5000.0)
        self.hotspot_spin.setValue(200.0)
        self.hotspot_spin.setSuffix(" µm")
        hot_button = QPushButton("Find hot spot")
        hot_button.clicked.connect(self.find_hotspot)
        export = []
        for text, slot in (
            ("Import ROIs…", self._ask_import),
            ("Export GeoJSON…", self._ask_geojson),
            ("Export CSV…", self._ask_csv),
        ):
            button = QPushButton(text)
            button.clicked.connect(slot)
            export.append(button)
        column(
            self,
            form,
            self.points_check,
            self.force_check,
            row(self.run_button, self.cancel_button),
            self.status,
            self.table,
            self.histogram,
            row(self.hotspot_spin, hot_button),
            row(*export),
        )

    def _refresh_layers(self, event=None) -> None:
        from napari.layers import Image, Shapes

        keep_image, keep_shapes = self.image_combo.currentText(), self.shapes_combo.currentText()
        keep_segment = self.segment_on_combo.currentText()
        rgb_names = [ly.name for ly in self.viewer.layers if isinstance(ly, Image) and ly.rgb]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(rgb_names)
        self.image_combo.setCurrentText(keep_image)
        self.image_combo.blockSignals(False)
        self.segment_on_combo.clear()
        self.segment_on_combo.addItems([SAME_LAYER] + rgb_names)
        keep_exclude = self.exclude_combo.currentText()
        shapes = [ly.name for ly in self.viewer.layers if isinstance(ly, Shapes)]
        self.shapes_combo.clear()
        self.shapes_combo.addItems([WHOLE_IMAGE] + shapes)
        self.shapes_combo.setCurrentText(keep_shapes)
        self.exclude_combo.clear()
        self.exclude_combo.addItems([NOTHING] + shapes)
        self.exclude_combo.setCurrentText(keep_exclude)
        self.segment_on_combo.setCurrentText(keep_segment)
        if self.image_combo.currentText() != self._mpp_layer:
            self._mpp_from_layer(self.image_combo.currentText())

    def _mpp_from_layer(self, name: str) -> None:
        """Show the pixel size of layer ``name``; 0 (and a request) when it has none."""
        from .._napari.layers import layer_mpp

        self._mpp_layer = name
        if name not in self.viewer.layers:
            self.mpp_spin.setValue(0.0)
            return
        mpp = layer_mpp(self.viewer.layers[name]) or self._typed_mpp.get(name)
        self.mpp_spin.setValue(float(mpp or 0.0))
        if not mpp:
            self.status.setText(f"The pixel size of {name!r} is unknown: set it (µm/px)")

    # -- compute -------------------------------------------------------------------------------
    def thresholds(self) -> tuple[float, ...]:
        """The DAB OD thresholds typed in the box."""
        text = self.threshold_edit.text().replace(",", " ").split()
        return tuple(float(t) for t in text)

    def compute(self):
        """Start the measurement in a worker thread; returns the worker (None on bad input)."""
        from napari_virtualstain.core.ki67 import Ki67Config

        from .._napari.ki67_layers import iter_ki67_layers

        try:
            layer, image, mpp, rois, config = self._inputs(Ki67Config)
            image, route = self._segment_route(layer, image)
            segmenter = self._segmenter()
        except (ValueError, KeyError, ImportError) as err:
            self.status.setText(f"Cannot compute: {err}")
            return None
        from .._napari.ki67_layers import world_outlines

        roi_source = self.shapes_combo.currentText() or WHOLE_IMAGE
        rois = self._distinct_names(layer.name, roi_source, rois)
        outlines = world_outlines(rois, layer, mpp)
        self.status.setText("Computing…")
        self._showing = None  # an earlier run still being shown stops there
        self._job = self.runner.run(
            iter_ki67_layers, image, mpp, rois, scale=tuple(layer.scale),
            translate=tuple(layer.translate), units=getattr(layer, "units", None),
            name=layer.name, points=self.points_check.isChecked(), segmenter=segmenter,
            stains=self.stains_combo.currentText(), config=config,
            force=self.force_check.isChecked(), **route,
            on_done=lambda out: self._on_done(layer.name, out, outlines, roi_source),
            on_failed=lambda msg: self._on_failed(layer.name, msg),
            description=f"Ki-67: {layer.name}",
        )  # fmt: skip
        return self._job

    def _inputs(self, config_cls):
        name = self.image_combo.currentText()
        if name not in self.viewer.layers:
            raise ValueError("choose an RGB image layer")
        layer = self.viewer.layers[name]
        image = layer.data[0] if layer.multiscale else layer.data
        if self._mpp_layer != name:  # never a pixel size left over from another layer
            self._mpp_from_layer(name)
        mpp = self.mpp_spin.value()
        if mpp <= 0:
            raise ValueError(f"the pixel size of {name!r} is unknown: set it (µm/px)")
        self._typed_mpp[name] = mpp  # typed for a layer without one: kept for that layer only
        from .._napari.ki67_layers import rois_from_shapes

        rois = None
        if self.shapes_combo.currentText() not in ("", WHOLE_IMAGE):
            rois = rois_from_shapes(self.viewer.layers[self.shapes_combo.currentText()], layer, mpp)
            if not rois:
                raise ValueError("the ROI layer has no shapes")
        excluded = self.exclude_combo.currentText()
        if excluded not in ("", NOTHING) and excluded in self.viewer.layers:
            from napari_virtualstain.core.roi import ROI, exclude

            if rois is None:
                rois = [ROI.whole_image(tuple(image.shape[:2]), mpp)]
            rois = exclude(rois, rois_from_shapes(self.viewer.layers[excluded], layer, mpp))
        return layer, image, mpp, rois, config_cls(thresholds=self.thresholds())

    def _distinct_names(self, image: str, source: str, rois):
        """``rois`` with a name another ROI layer's results on ``image`` already use given
        " (<ROI layer>)", so the table's rows of the two layers stay apart."""
        from dataclasses import replace

        taken = {
            r.name
            for (img, src), (run, _) in self.kept.items()
            if img == image and src != source
            for r in run.results
        }
        if not rois or not taken:
            return rois
        return [replace(r, name=f"{r.name} ({source})") if r.name in taken else r for r in rois]

    def _segment_route(self, layer, image):
        """The image to segment and the extra arguments for seed 003's route (if chosen)."""
        name = self.segment_on_combo.currentText()
        if name in ("", SAME_LAYER):
            return image, {}
        if name not in self.viewer.layers:
            raise ValueError(f"the layer {name!r} to segment nuclei on is gone")
        other = self.viewer.layers[name]
        seg_image = other.data[0] if other.multiscale else other.data
        if tuple(seg_image.shape[:2]) != tuple(image.shape[:2]):
            raise ValueError(
                f"{name!r} {tuple(seg_image.shape[:2])} and {layer.name!r} "
                f"{tuple(image.shape[:2])} differ in size: nuclei must be segmented on the same "
                "pixel grid"
            )
        return seg_image, {"measure_image": image, "segment_he": True}

    def _segmenter(self):
        name = self.segmenter_combo.currentText()
        model = self.model_edit.text().strip()
        if not model:
            return name
        from napari_virtualstain.core.segmentation import get_segmenter

        return get_segmenter(name, model=model)

    def cancel(self) -> None:
        """Stop the running measurement at its next progress step (even before it started)."""
        if self._job is not None:
            self._job.quit()
            self.status.setText("Cancelling…")

    def _on_failed(self, image_name: str, message: str) -> None:
        self._job = None
        if message == "cancelled":
            self.status.setText("Cancelled: nothing added")
        else:
            self.status.setText(f"{image_name!r}: {message}")

    def _on_done(self, image_name: str, out, outlines: dict, roi_source: str = "") -> None:
        """Keep the results, then show them over several event-loop turns (no computing here).

        napari spends 100-190 ms of the GUI thread on each layer it adds here, and the
        histogram's redraw 85-135 ms: the labels, the points, and the table with the plot
        each get their own turn, so no single turn holds the window for all of them.
        """
        from qtpy.QtCore import QTimer

        self.roi_sources[image_name] = roi_source
        self.kept[(image_name, roi_source)] = (out.run, outlines)
        self.runs[image_name] = out.run
        self.outlines[image_name] = outlines  # ROIs in world coordinates, for "same region"
        self.histograms[image_name] = out.histograms
        self._showing = out
        steps = [
            lambda: self._add_prepared(image_name, out.labels, self.viewer.add_labels),
            lambda: self._add_prepared(image_name, out.points, self.viewer.add_points),
            lambda: self._show_summary(image_name, out),
        ]

        def next_step() -> None:
            if self._showing is not out:  # a newer run took over
                return
            steps.pop(0)()
            if steps:
                QTimer.singleShot(0, next_step)

        next_step()

    def _add_prepared(self, image_name: str, prepared, adder) -> None:
        points = adder == self.viewer.add_points
        if prepared is None:
            if points and f"Centroids ({image_name})" in self.viewer.layers:
                self.viewer.layers.remove(f"Centroids ({image_name})")
            return
        data, kwargs, _ = prepared
        if kwargs["name"] in self.viewer.layers:
            self.viewer.layers.remove(kwargs["name"])
        added = adder(data, **kwargs)
        added.metadata["ki67_source"] = image_name
        if not points:
            added.mouse_double_click_callbacks.append(self._on_double_click)

    def _show_summary(self, image_name: str, out) -> None:
        run = out.run
        self._fill_table()
        self.histogram.show_histograms(out.histograms, image_name)
        head = "Done" if run.stain_verified else "Done, STAIN NOT VERIFIED"
        ungraded = sum(not r.graded for r in run.results)
        text = f"{head}: {len(run.results)} ROI(s)"
        if ungraded:
            text += f", {ungraded} without bin or grade (see Note)"
        if not run.stain_verified:
            text += f". {run.stain_check.reason}"
        self.status.setText(" ".join([text + ".", out.note]).strip())
        self.status.setToolTip("\n".join(w for r in run.results for w in r.warnings))
        self._showing = None
        self._job = None

    # -- flip ----------------------------------------------------------------------------------
    def _on_double_click(self, labels_layer, event) -> None:
        self.flip_at(labels_layer, event.position)

    def flip_at(self, labels_layer, world_position) -> int | None:
        """Flip the nucleus under ``world_position`` on ``labels_layer``; return its label."""
        value = labels_layer.get_value(world_position, world=True)
        if not value:
            return None
        return self.flip_label(labels_layer.metadata["ki67_source"], int(value))

    def flip_label(self, image_name: str, label: int) -> int | None:
        """Switch nucleus ``label`` of the run on ``image_name`` and update colours and table."""
        from napari_virtualstain.core.ki67 import dab_histograms

        from .._napari.ki67_layers import nuclei_colormap, nuclei_features

        run = self.runs[image_name]
        for i, m in enumerate(run.measurements):
            if label in m.nuclei.label:
                run = run.replace_measurement(i, m.flip(label))
        self.runs[image_name] = run
        key = (image_name, self.roi_sources.get(image_name, ""))
        if key in self.kept:
            self.kept[key] = (run, self.kept[key][1])
        name = f"Nuclei ({image_name})"
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.colormap = nuclei_colormap(run)
            feats = nuclei_features(run)
            row = layer.features.index[layer.features["label"] == label]
            hit = feats["label"] == label
            layer.features.loc[row, "class"] = feats["class"][hit][0]
            layer.features.loc[row, "flipped"] = bool(feats["flipped"][hit][0])
        self._fill_table()
        self.histograms[image_name] = dab_histograms(run)
        self.histogram.show_histograms(self.histograms[image_name], image_name)
        return label

    # -- table, hot spot and export ------------------------------------------------------------
    def _fill_table(self) -> None:
        from napari_virtualstain.core.ki67 import (
            declared_real,
            is_virtual,
            same_region_differences,
        )

        metadata = {ly.name: dict(ly.metadata or {}) for ly in self.viewer.layers}
        entries = []
        for (name, source), (run, outlines) in self.kept.items():
            deltas = {}
            real = declared_real(name, metadata)
            # the real image's run on the same ROI layer, else its latest one
            real_run, real_outlines = self.kept.get((real, source), (None, None))
            if real_run is None and real in self.runs:
                real_run, real_outlines = self.runs[real], self.outlines.get(real)
            if real_run is not None:
                deltas = same_region_differences(real_run, run, real_outlines, outlines)
            entries.append((name, run, deltas, is_virtual(metadata.get(name))))
        self.table.show_runs(entries)

    def table_rows(self) -> list[dict[str, str]]:
        """The results table as text, one dict (column -> cell) per row."""
        return self.table.records()
