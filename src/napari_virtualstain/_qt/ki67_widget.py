"""The "Ki-67" dock widget: ROIs in, nuclei and the tumour ratio out, real beside virtual.

It reads its controls, runs ``iter_measure_rois`` off the GUI thread (progress, cancel), and
adds a Labels layer of nuclei (red positive, blue negative) and optional centroid points.
Double-clicking a nucleus flips its class and recounts.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

WHOLE_IMAGE = "(whole image)"
SAME_LAYER = "— (the measured layer)"
COLUMNS = (
    "Image", "ROI", "Nuclei", "Positive", "Index %", "Area ratio", "H-score", "Bin", "WHO",
    "Δ index vs real",
)  # fmt: skip


class Ki67Widget(QWidget):
    """Pick an image layer, ROIs, segmenter, thresholds and stains; compute the Ki-67 ratio."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.runs: dict[str, object] = {}  # image layer name -> RatioRun
        self.worker = None
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # -- controls ------------------------------------------------------------------------------
    def _build(self) -> None:
        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(self._mpp_from_layer)
        self.shapes_combo = QComboBox()
        self.segment_on_combo = QComboBox()
        self.segment_on_combo.setToolTip(
            "Segment nuclei on another RGB layer of the same size (e.g. a virtual H&E made from "
            "this Ki-67) and measure DAB on the chosen image"
        )
        self.segmenter_combo = QComboBox()
        self.segmenter_combo.addItems(["builtin", "stardist", "cellpose"])
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
        self.points_check = QCheckBox("Add centroid points")
        form = QFormLayout()
        for label, widget in (
            ("Image", self.image_combo), ("ROIs", self.shapes_combo),
            ("Segment nuclei on", self.segment_on_combo),
            ("Segmenter", self.segmenter_combo), ("Model", self.model_edit),
            ("DAB thresholds", self.threshold_edit), ("Stain vectors", self.stains_combo),
            ("Pixel size", self.mpp_spin),
        ):  # fmt: skip
            form.addRow(label, widget)
        self.run_button = QPushButton("Compute")
        self.run_button.clicked.connect(self.compute)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.hotspot_spin = QDoubleSpinBox()
        self.hotspot_spin.setRange(20.0, 5000.0)
        self.hotspot_spin.setValue(200.0)
        self.hotspot_spin.setSuffix(" µm")
        hot_button = QPushButton("Find hot spot")
        hot_button.clicked.connect(self.find_hotspot)
        hot = QHBoxLayout()
        hot.addWidget(self.hotspot_spin)
        hot.addWidget(hot_button)
        export = QHBoxLayout()
        for text, slot in (
            ("Import ROIs…", self._ask_import),
            ("Export GeoJSON…", self._ask_geojson),
            ("Export CSV…", self._ask_csv),
        ):
            button = QPushButton(text)
            button.clicked.connect(slot)
            export.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.points_check)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addLayout(hot)
        layout.addLayout(export)

    def _refresh_layers(self, event=None) -> None:
        from napari.layers import Image, Shapes

        keep_image, keep_shapes = self.image_combo.currentText(), self.shapes_combo.currentText()
        keep_segment = self.segment_on_combo.currentText()
        rgb_names = [ly.name for ly in self.viewer.layers if isinstance(ly, Image) and ly.rgb]
        self.image_combo.clear()
        self.image_combo.addItems(rgb_names)
        self.segment_on_combo.clear()
        self.segment_on_combo.addItems([SAME_LAYER] + rgb_names)
        self.shapes_combo.clear()
        self.shapes_combo.addItems(
            [WHOLE_IMAGE] + [ly.name for ly in self.viewer.layers if isinstance(ly, Shapes)]
        )
        self.image_combo.setCurrentText(keep_image)
        self.shapes_combo.setCurrentText(keep_shapes)
        self.segment_on_combo.setCurrentText(keep_segment)

    def _mpp_from_layer(self, name: str) -> None:
        if name not in self.viewer.layers:
            return
        mpp = self.viewer.layers[name].metadata.get("mpp")
        if mpp:
            self.mpp_spin.setValue(float(mpp))

    # -- compute -------------------------------------------------------------------------------
    def thresholds(self) -> tuple[float, ...]:
        """The DAB OD thresholds typed in the box."""
        text = self.threshold_edit.text().replace(",", " ").split()
        return tuple(float(t) for t in text)

    def compute(self):
        """Start the measurement in a worker thread; returns the worker (None on bad input)."""
        from napari.qt.threading import thread_worker

        from napari_virtualstain.core.ki67 import Ki67Config
        from napari_virtualstain.core.ki67.pipeline import iter_measure_rois

        try:
            layer, image, mpp, rois, config = self._inputs(Ki67Config)
            image, route = self._segment_route(layer, image)
        except (ValueError, KeyError) as err:
            self.status.setText(f"Cannot compute: {err}")
            return None
        segmenter = self._segmenter()
        worker = thread_worker(iter_measure_rois, start_thread=False)(
            image, mpp, rois, segmenter=segmenter, stains=self.stains_combo.currentText(),
            config=config, **route,
        )  # fmt: skip
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda run: self._on_done(layer, run))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self._finish("Cancelled: nothing added"))
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("Computing…")
        worker.start()
        return worker

    def _inputs(self, config_cls):
        name = self.image_combo.currentText()
        if name not in self.viewer.layers:
            raise ValueError("choose an RGB image layer")
        layer = self.viewer.layers[name]
        image = layer.data[0] if layer.multiscale else layer.data
        mpp = self.mpp_spin.value()
        if mpp <= 0:
            raise ValueError(f"the pixel size of {name!r} is unknown: set it (µm/px)")
        rois = None
        if self.shapes_combo.currentText() not in ("", WHOLE_IMAGE):
            from .._napari.ki67_layers import rois_from_shapes

            rois = rois_from_shapes(self.viewer.layers[self.shapes_combo.currentText()], layer, mpp)
            if not rois:
                raise ValueError("the ROI layer has no shapes")
        return layer, image, mpp, rois, config_cls(thresholds=self.thresholds())

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
        if name == "builtin" or not model:
            return name
        from napari_virtualstain.core.segmentation import get_segmenter

        return get_segmenter(name, model=model)

    def cancel(self) -> None:
        """Stop the running measurement at its next progress step."""
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("Cancelling…")

    def _on_progress(self, step) -> None:
        self.progress.setMaximum(max(step.total, 1))
        self.progress.setValue(step.done)
        if step.message:
            self.status.setText(step.message)

    def _on_error(self, err) -> None:
        self._finish(f"Failed: {err}")

    def _finish(self, message: str) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.setText(message)

    def _on_done(self, layer, run) -> None:
        self.runs[layer.name] = run
        notes = [w for r in run.results for w in r.warnings]
        try:
            self._show_layers(layer, run)
        except ValueError as err:  # ROIs too large for a label image: results only
            notes.insert(0, f"No nuclei layer: {err}.")
        self._fill_table()
        self._finish("Done. " + " ".join(notes))

    # -- layers --------------------------------------------------------------------------------
    def _show_layers(self, layer, run) -> None:
        from .._napari.ki67_layers import centroid_points_layer_data, nuclei_labels_layer_data

        name = f"Nuclei ({layer.name})"
        data, kwargs, _ = nuclei_labels_layer_data(run, layer.scale, layer.translate, name)
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        labels = self.viewer.add_labels(data, **kwargs)
        labels.metadata["ki67_source"] = layer.name
        labels.mouse_double_click_callbacks.append(self._on_double_click)
        points = f"Centroids ({layer.name})"
        if points in self.viewer.layers:
            self.viewer.layers.remove(points)
        if self.points_check.isChecked():
            pdata, pkwargs, _ = centroid_points_layer_data(
                run, layer.scale, layer.translate, points
            )
            self.viewer.add_points(pdata, **pkwargs)

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
        from .._napari.ki67_layers import nuclei_colormap

        run = self.runs[image_name]
        for i, m in enumerate(run.measurements):
            if label in m.nuclei.label:
                run = run.replace_measurement(i, m.flip(label))
        self.runs[image_name] = run
        name = f"Nuclei ({image_name})"
        if name in self.viewer.layers:
            self.viewer.layers[name].colormap = nuclei_colormap(run)
        self._fill_table()
        return label

    # -- table and export ----------------------------------------------------------------------
    def _is_virtual(self, name: str) -> bool:
        meta = self.viewer.layers[name].metadata if name in self.viewer.layers else {}
        return bool(meta.get("virtual")) or "virtual" in name.lower()

    def _fill_table(self) -> None:
        from napari_virtualstain.core.ki67.pipeline import index_differences

        real = [n for n in self.runs if not self._is_virtual(n)]
        reference = self.runs[real[-1]] if real else None
        rows = []
        for name, run in self.runs.items():
            deltas = {}
            if reference is not None and self._is_virtual(name):
                deltas = index_differences(reference, run)
            for r in run.results:
                d = deltas.get(r.name)
                rows.append(
                    (
                        name, r.name, r.n_nuclei, r.n_positive, f"{100 * r.labelling_index:.1f}",
                        f"{r.area_ratio:.3f}", f"{r.h_score:.1f}", r.bin or "–", r.who_grade or "–",
                        "" if d is None else f"{100 * d:+.1f}",
                    )
                )  # fmt: skip
        rows.sort(key=lambda row: (row[1], row[0]))  # the same ROI's rows side by side
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(str(value)))

    def table_rows(self) -> list[list[str]]:
        """The results table as text, row by row."""
        return [
            [self.table.item(i, j).text() for j in range(self.table.columnCount())]
            for i in range(self.table.rowCount())
        ]

    def export_geojson(self, path, image_name: str | None = None) -> Path:
        """ROIs (with their results) and classified nuclei as QuPath GeoJSON."""
        from napari_virtualstain.core.geojson import nuclei_features, roi_features, write_geojson

        run = self.runs[image_name or next(reversed(self.runs))]
        feats = roi_features([m.roi for m in run.measurements], run.mpp, run.results)
        for m in run.measurements:
            if m.labels is None:  # too large to outline: the ROI's results are still written
                self.status.setText(f"ROI {m.roi.name!r}: nuclei not exported (ROI too large)")
                continue
            feats += nuclei_features(m.labels, m.nuclei, m.origin_px, m.config.class_names)
        return write_geojson(path, feats)

    def export_csv(self, nuclei_path, rois_path, image_name: str | None = None) -> None:
        """Per-nucleus and per-ROI CSV files."""
        from napari_virtualstain.core.ki67 import write_nuclei_csv, write_results_csv

        run = self.runs[image_name or next(reversed(self.runs))]
        write_nuclei_csv(nuclei_path, [(m.roi.name, m.nuclei) for m in run.measurements])
        write_results_csv(rois_path, run.results)

    def find_hotspot(self, image_name: str | None = None):
        """Add the square (side from the spin box) of highest labelling index as a Shapes layer.

        The search covers each measured ROI; the best window over all ROIs wins.
        """
        from napari_virtualstain.core.ki67 import find_hotspot

        from .._napari.ki67_layers import roi_shapes_layer_data

        if not self.runs:
            self.status.setText("Compute first: the hot spot is searched among measured nuclei")
            return None
        name = image_name or next(reversed(self.runs))
        run, size_um = self.runs[name], self.hotspot_spin.value()
        best = None
        for m in run.measurements:
            mask = m.roi.mask(run.mpp, m.origin_px, m.labels.shape)
            spot = find_hotspot(m.nuclei, size_um, run.mpp, mask, m.origin_px)
            if spot is not None and (best is None or spot.labelling_index > best.labelling_index):
                best = spot
        if best is None:
            self.status.setText(f"No {size_um:.0f} µm window with enough nuclei inside the ROIs")
            return None
        layer = self.viewer.layers[name]
        roi = best.to_roi(f"hot spot {100 * best.labelling_index:.1f} %")
        data, kwargs, _ = roi_shapes_layer_data([roi], run.mpp, layer.scale, layer.translate,
                                                f"Hot spot ({name})")  # fmt: skip
        if kwargs["name"] in self.viewer.layers:
            self.viewer.layers.remove(kwargs["name"])
        self.viewer.add_shapes(data, **kwargs)
        self.status.setText(
            f"Hot spot: {best.n_positive}/{best.n_nuclei} positive "
            f"({100 * best.labelling_index:.1f} %) in {size_um:.0f} µm"
        )
        return best

    def import_rois(self, path):
        """Read QuPath GeoJSON annotations as a Shapes layer on the chosen image; select it."""
        from napari_virtualstain.core.geojson import read_geojson

        from .._napari.ki67_layers import roi_shapes_layer_data

        name, mpp = self.image_combo.currentText(), self.mpp_spin.value()
        if name not in self.viewer.layers or mpp <= 0:
            self.status.setText("Choose the image layer and its pixel size before importing ROIs")
            return None
        try:
            rois = read_geojson(path, mpp).rois
        except ValueError as err:
            self.status.setText(str(err))
            return None
        if not rois:
            self.status.setText(f"{path}: no annotations to use as ROIs")
            return None
        layer = self.viewer.layers[name]
        data, kwargs, _ = roi_shapes_layer_data(rois, mpp, layer.scale, layer.translate,
                                                f"ROIs ({Path(path).name})")  # fmt: skip
        shapes = self.viewer.add_shapes(data, **kwargs)
        self.shapes_combo.setCurrentText(shapes.name)
        return shapes

    def _ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import ROIs", "", "GeoJSON (*.geojson *.json)")
        if path:
            self.import_rois(path)

    def _ask_geojson(self) -> None:
        if not self.runs:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export GeoJSON", "", "GeoJSON (*.geojson)")
        if path:
            self.export_geojson(path)

    def _ask_csv(self) -> None:
        if not self.runs:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Per-nucleus CSV", "", "CSV (*.csv)")
        if path:
            p = Path(path)
            self.export_csv(p, p.with_name(p.stem + "_rois.csv"))
