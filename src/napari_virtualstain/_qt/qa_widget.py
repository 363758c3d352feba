"""The "QA" dock widget: register the real stain to the virtual one, build residual layers for
the view or an ROI, and show the summary numbers. All numerics are in ``core``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_virtualstain.core.residual import RESIDUAL_KINDS

NONE = "—"
MAX_SIDE_PX = 2048  # regions are computed on the finest level where they fit this


def _levels(layer) -> list:
    return list(layer.data) if layer.multiscale else [layer.data]


def _mpp0(layer) -> float:
    mpp = (layer.metadata or {}).get("mpp")
    return float(mpp) if mpp else float(layer.scale[-1])


def _level_mpps(layer) -> list[float]:
    levels = _levels(layer)
    return [_mpp0(layer) * levels[0].shape[0] / lv.shape[0] for lv in levels]


class QAWidget(QWidget):
    """Residual maps and summary numbers, virtual stain against the (registered) real one."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.registration = None
        self.worker = None
        self.last_result = None
        self.combos = {k: QComboBox() for k in ("virtual", "real", "source", "labels", "roi")}
        form = QFormLayout()
        for key, label in (
            ("virtual", "virtual stain"),
            ("real", "real stain"),
            ("source", "source (cycle)"),
            ("labels", "nuclei labels"),
            ("roi", "ROI shapes"),
        ):
            form.addRow(label, self.combos[key])
        self.forward_edit, self.backward_edit = QLineEdit(), QLineEdit()
        self.forward_edit.setPlaceholderText("forward generator (A2B) model, optional")
        self.backward_edit.setPlaceholderText("backward generator (B2A) model, optional")
        form.addRow("G forward", self.forward_edit)
        form.addRow("G back", self.backward_edit)
        self.region = QComboBox()
        self.region.addItems(["current view", "ROI (first shape)", "whole slide (lazy)"])
        form.addRow("region", self.region)
        self.kind_boxes = {k: QCheckBox(k) for k in RESIDUAL_KINDS}
        kinds_row = QHBoxLayout()
        for box in self.kind_boxes.values():
            box.setChecked(True)
            kinds_row.addWidget(box)

        self.register_button = QPushButton("Register real → virtual")
        self.load_button, self.save_button = QPushButton("Load…"), QPushButton("Save…")
        self.map_rois_button = QPushButton("Map ROIs to real slide")
        self.build_button = QPushButton("Build QA layers")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)

        reg_row = QHBoxLayout()
        for b in (self.register_button, self.load_button, self.save_button):
            reg_row.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(kinds_row)
        layout.addLayout(reg_row)
        layout.addWidget(self.map_rois_button)
        run_row = QHBoxLayout()
        run_row.addWidget(self.build_button)
        run_row.addWidget(self.cancel_button)
        layout.addLayout(run_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.summary)

        self.register_button.clicked.connect(self.register)
        self.load_button.clicked.connect(self._load_dialog)
        self.save_button.clicked.connect(self._save_dialog)
        self.map_rois_button.clicked.connect(self.map_rois)
        self.build_button.clicked.connect(self.build)
        self.cancel_button.clicked.connect(self.cancel)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh_layers)
        self.refresh_layers()

    # -- layer choices ------------------------------------------------------------------------
    def refresh_layers(self, *_):
        from napari.layers import Image, Labels, Shapes

        kinds = {"virtual": Image, "real": Image, "source": Image, "labels": Labels, "roi": Shapes}
        for key, combo in self.combos.items():
            current = combo.currentText()
            combo.clear()
            if key in ("source", "labels", "roi"):
                combo.addItem(NONE)
            combo.addItems([lay.name for lay in self.viewer.layers if isinstance(lay, kinds[key])])
            if current:
                combo.setCurrentText(current)

    def _layer(self, key):
        name = self.combos[key].currentText()
        return None if name in ("", NONE) else self.viewer.layers[name]

    # -- background work ----------------------------------------------------------------------
    def _start(self, gen_fn, on_done, *args):
        from napari.qt.threading import thread_worker

        self.worker = thread_worker(gen_fn, start_thread=False)(*args)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.cancel_button.setEnabled(True)
        self.build_button.setEnabled(False)
        self.register_button.setEnabled(False)
        self.worker.start()
        return self.worker

    def _on_progress(self, value):
        fraction, message = value
        self.progress.setValue(int(100 * fraction))
        self.status.setText(message)

    def _on_error(self, err):
        self.status.setText(f"error: {err}")

    def _on_finished(self):
        self.cancel_button.setEnabled(False)
        self.build_button.setEnabled(True)
        self.register_button.setEnabled(True)

    def cancel(self):
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelled")

    # -- registration -------------------------------------------------------------------------
    def register(self):
        """Register the real layer (moving) onto the virtual one (fixed) in the background."""
        from napari_virtualstain.core.registration import iter_register

        fixed, moving = self._layer("virtual"), self._layer("real")
        if fixed is None or moving is None or fixed is moving:
            self.status.setText("choose two different layers for virtual and real stains")
            return None
        args = []
        for lay in (fixed, moving):
            levels, mpps = _levels(lay), _level_mpps(lay)
            # the finest level that still fits 1024 px is plenty for the 512-px refinement
            i = next(
                (j for j, lv in enumerate(levels) if max(lv.shape[:2]) <= 1024), len(levels) - 1
            )
            args.append((np.asarray(levels[i]), mpps[i], (mpps[0], levels[0].shape[:2])))
        (f_img, f_mpp, f0), (m_img, m_mpp, m0) = args
        return self._start(
            iter_register, self._registered, f_img, m_img, f_mpp, m_mpp, None, f0, m0
        )

    def _registered(self, registration):
        self.registration = registration
        self.status.setText(f"registered: score {registration.score:.3f} ({registration.notes})")
        self.show_registered()

    def show_registered(self):
        """Add the real slide in the virtual slide's frame (affine, or lazily warped)."""
        from .._napari.residual_layers import registered_layer_data

        fixed, moving = self._layer("virtual"), self._layer("real")
        if self.registration is None or moving is None:
            return None
        data = moving.data if moving.multiscale else moving.data
        kwargs = {
            "name": moving.name,
            "rgb": moving.rgb,
            "scale": tuple(moving.scale),
            "multiscale": moving.multiscale,
            "metadata": dict(moving.metadata),
        }
        f_levels = _levels(fixed)
        data, kwargs, _ = registered_layer_data(
            (list(data) if moving.multiscale else data, kwargs, "image"),
            self.registration,
            [lv.shape for lv in f_levels],
            _level_mpps(fixed),
        )
        return self.viewer.add_image(data, **kwargs)

    def _load_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Load registration", "", "JSON (*.json)")
        if path:
            self.load_registration(path)

    def _save_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save registration", "", "JSON (*.json)")
        if path and self.registration is not None:
            self.registration.save(path)

    def load_registration(self, path):
        from napari_virtualstain.core.registration import Registration

        try:
            self.registration = Registration.load(Path(path))
        except ValueError as err:
            self.status.setText(str(err))
            return None
        self.status.setText(f"loaded registration (score {self.registration.score:.3f})")
        return self.registration

    def map_rois(self):
        """Copy the ROI shapes into the real slide's µm frame, as a new shapes layer."""
        from .._napari.residual_layers import map_shapes

        shapes = self._layer("roi")
        if shapes is None or self.registration is None or not len(shapes.data):
            self.status.setText("needs an ROI shapes layer and a registration")
            return None
        polys = map_shapes(list(shapes.data), list(shapes.shape_type), self.registration)
        return self.viewer.add_shapes(
            polys,
            shape_type="polygon",
            name=f"{shapes.name} (real)",
            edge_color="yellow",
            face_color="transparent",
        )

    # -- QA layers ----------------------------------------------------------------------------
    def _region(self, virtual):
        """(level, box_px, mask) of the view or the first ROI, on a level that fits 2048 px."""
        from napari_virtualstain.core.roi import ROI

        levels, mpps = _levels(virtual), _level_mpps(virtual)
        world_per_px0 = float(virtual.scale[-1])
        if self.region.currentIndex() == 1:
            shapes = self._layer("roi")
            if shapes is None or not len(shapes.data):
                raise ValueError("region is 'ROI' but no shapes layer with a shape is chosen")
            # shapes live in world units; level-0 pixels of the virtual layer are world / scale
            roi = ROI.from_pixels(
                shapes.shape_type[0], shapes.data[0], mpps[0] / world_per_px0, "ROI"
            )
        else:
            lo, hi = np.asarray(virtual.corner_pixels)[:, -2:]
            scale = levels[0].shape[0] / levels[virtual.data_level].shape[0]
            (y0, x0), (y1, x1) = lo * scale * mpps[0], (hi + 1) * scale * mpps[0]
            roi = ROI.rectangle("view", y0, x0, y1 - y0, x1 - x0)
        by0, bx0, by1, bx1 = roi.bbox_um()
        level = next(
            (i for i, m in enumerate(mpps) if max(by1 - by0, bx1 - bx0) / m <= MAX_SIDE_PX),
            len(mpps) - 1,
        )
        box = roi.bbox_px(mpps[level], levels[level].shape[:2])
        mask = roi.mask(mpps[level], box[:2], (box[2] - box[0], box[3] - box[1]))
        return level, box, (None if self.region.currentIndex() == 0 else mask)

    def build_request(self):
        """The :class:`QARequest` for the chosen layers and region (raises ValueError)."""
        from napari_virtualstain.core.residual import QARequest

        virtual, real = self._layer("virtual"), self._layer("real")
        if virtual is None or real is None or virtual is real:
            raise ValueError("choose two different layers for virtual and real stains")
        level, box, mask = self._region(virtual)
        mpp = _level_mpps(virtual)[level]
        real_levels, real_mpps = _levels(real), _level_mpps(real)
        if self.registration is not None:
            j = max((i for i, m in enumerate(real_mpps) if m <= mpp * 1.01), default=0)
            real_arr, real_mpp = real_levels[j], real_mpps[j]
        else:
            real_arr, real_mpp = real_levels[min(level, len(real_levels) - 1)], None
        labels = self._layer("labels")
        if labels is not None:
            labels = np.asarray(_levels(labels)[level][box[0] : box[2], box[1] : box[3]])
        cycle = {}
        if self.forward_edit.text().strip() and self.backward_edit.text().strip():
            source = self._layer("source")
            if source is None:
                raise ValueError("the cycle error needs a source layer")
            from napari_virtualstain.core.models import load_model

            cycle = {
                "source": _levels(source)[level],
                "forward": load_model(self.forward_edit.text().strip(), device="cpu"),
                "backward": load_model(self.backward_edit.text().strip(), device="cpu"),
            }
        kinds = tuple(k for k, b in self.kind_boxes.items() if b.isChecked())
        return QARequest(
            _levels(virtual)[level],
            real_arr,
            mpp,
            tuple(box),
            kinds=kinds,
            real_mpp=real_mpp,
            registration=self.registration,
            mask=mask,
            labels=labels,
            **cycle,
        )

    def build(self):
        """Compute the residual layers off the GUI thread; layers are added when done."""
        from napari_virtualstain.core.residual import iter_qa

        if self.region.currentIndex() == 2:
            return self.build_lazy()
        try:
            request = self.build_request()
        except Exception as err:  # bad choices, unreadable models: shown, never raised in Qt
            self.status.setText(f"error: {err}")
            return None
        return self._start(iter_qa, self._add_result, request)

    def build_lazy(self):
        """Whole-slide residual pyramids, computed chunk by chunk as napari displays them."""
        from napari_virtualstain.core.residual import iter_lazy_qa

        virtual, real = self._layer("virtual"), self._layer("real")
        if virtual is None or real is None or virtual is real:
            self.status.setText("choose two different layers for virtual and real stains")
            return None
        kinds = tuple(k for k, b in self.kind_boxes.items() if b.isChecked())
        # a whole pyramid must be built before the worker starts, so check the grid here
        if self.registration is None and [lv.shape for lv in _levels(real)] != [
            lv.shape for lv in _levels(virtual)
        ]:
            self.status.setText("error: real and virtual are not on one grid: register them first")
            return None
        return self._start(
            iter_lazy_qa,
            self._add_result,
            _levels(virtual),
            _levels(real),
            _mpp0(virtual),
            kinds,
            self.registration,
            _mpp0(real),
        )

    def _add_result(self, result):
        from .._napari.residual_layers import qa_layer_data

        self.last_result = result
        virtual = self._layer("virtual")
        world_mpp = _mpp0(virtual) / float(virtual.scale[-1]) if virtual is not None else None
        for data, kwargs, kind in qa_layer_data(result, world_mpp=world_mpp):
            if kwargs["name"] in self.viewer.layers:
                self.viewer.layers.remove(kwargs["name"])
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        lines = [
            f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
            for k, v in result.summary.items()
        ]
        lines += [f"seconds to build {k}: {v:.2f}" for k, v in result.seconds.items()]
        self.summary.setPlainText("\n".join(lines))
        self.status.setText(f"built {len(result.maps)} layers for box {result.box_px}")
