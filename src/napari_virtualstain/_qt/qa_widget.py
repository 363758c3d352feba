"""The "QA" dock widget: register the real stain to the virtual one, build residual layers for
the view, an ROI or the whole slide, and show the summary numbers and each map's legend.

The widget only reads values (layers, the view's corners, an ROI's vertices) and hands them to
one ``core.qa`` generator through :class:`~._qt.runner.WorkerRunner`; the pixels are read and
every number is computed in the worker. The virtual stain may be the plugin's own overlay
(RGBA, transparent where not computed yet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from napari_virtualstain.core.residual import RESIDUAL_KINDS

from .layouts import column, row, wrapped_label
from .qa_legend import LegendWidget
from .qa_summary import region_text, summary_lines
from .runner import WorkerRunner
from .viewer_access import unproxied, watch_layers

NONE = "—"
MAX_SIDE_PX = 2048  # regions are computed on the finest level where they fit this
REGIONS = ("current view", "ROI (first shape)", "whole slide (lazy)")


def layer_pixels(layer):
    """A ``core.qa.LayerPixels`` of a napari layer: its levels and where they lie in the world."""
    from napari_virtualstain.core.qa import LayerPixels

    levels = list(layer.data) if layer.multiscale else [layer.data]
    from .._napari.layers import layer_mpp

    mpp = layer_mpp(layer)  # units + scale (any reader), or our metadata
    return LayerPixels.from_levels(layer.name, levels, layer.scale, layer.translate, mpp)


def model_direction(layer) -> str | None:
    """The model direction ("ki67->he") in a virtual stain's provenance, else None."""
    record = (layer.metadata or {}).get("virtualstain")
    model = record.get("model") if isinstance(record, dict) else None
    return model.get("direction") if isinstance(model, dict) else None


class QAWidget(QWidget):
    """Residual maps and summary numbers, virtual stain against the (registered) real one."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = unproxied(napari_viewer)  # see viewer_access
        self.registration = None
        self.last_result = None
        self.pending_layers: list = []  # QA layers still to add, one per event-loop turn
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
        self.region.addItems(REGIONS)
        form.addRow("region", self.region)
        self.kind_boxes = {k: QCheckBox(k) for k in RESIDUAL_KINDS}
        for box in self.kind_boxes.values():
            box.setChecked(True)

        self.register_button = QPushButton("Register real → virtual")
        self.load_button, self.save_button = QPushButton("Load…"), QPushButton("Save…")
        self.map_rois_button = QPushButton("Map ROIs to real slide")
        self.build_button = QPushButton("Build QA layers")
        self.cancel_button = QPushButton("Cancel")
        self.status = wrapped_label()
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.legend = LegendWidget()
        self.runner = WorkerRunner(
            self.status, self.cancel_button, (self.build_button, self.register_button)
        )

        column(
            self,
            form,
            row(*self.kind_boxes.values()),
            row(self.register_button, self.load_button, self.save_button),
            self.map_rois_button,
            row(self.build_button, self.cancel_button),
            self.status,
            self.legend,
            self.summary,
        )

        self.register_button.clicked.connect(self.register)
        self.load_button.clicked.connect(self._load_dialog)
        self.save_button.clicked.connect(self._save_dialog)
        self.map_rois_button.clicked.connect(self.map_rois)
        self.build_button.clicked.connect(self.build)
        watch_layers(self.viewer, self.refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._show_active_legend)
        self.refresh_layers()

    @property
    def worker(self):
        return self.runner.worker

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
        self._default_pair()

    def _default_pair(self) -> None:
        """Where the pair is not chosen yet, or is one layer twice: a virtual stain, and the
        real stain declared as its pair (else another real image), never a layer with itself."""
        from napari_virtualstain.core.ki67 import declared_real, is_virtual

        virtual_combo, real_combo = self.combos["virtual"], self.combos["real"]
        if virtual_combo.currentText() != real_combo.currentText():
            return
        metadata = {ly.name: dict(ly.metadata or {}) for ly in self.viewer.layers}
        names = [virtual_combo.itemText(i) for i in range(virtual_combo.count())]
        virtual = next((n for n in names if is_virtual(metadata.get(n))), None)
        if virtual is None:
            return
        virtual_combo.setCurrentText(virtual)
        real = declared_real(virtual, metadata)
        others = [n for n in names if n != virtual and not is_virtual(metadata.get(n))]
        if real is not None or others:
            real_combo.setCurrentText(real if real is not None else others[0])

    def _layer(self, key):
        name = self.combos[key].currentText()
        return (
            None
            if name in ("", NONE) or name not in self.viewer.layers
            else self.viewer.layers[name]
        )

    def _pair(self):
        virtual, real = self._layer("virtual"), self._layer("real")
        if virtual is None or real is None or virtual is real:
            raise ValueError("choose two different layers for virtual and real stains")
        return virtual, real

    def _fail(self, message: str) -> None:
        """A run that did not finish leaves no stale numbers behind."""
        self.last_result = None
        self.pending_layers = []
        self.summary.setPlainText("")
        self.legend.show_legend(None)
        if not message.startswith(("error", "cancelled")):
            message = f"error: {message}"
        self.status.setText(message)

    # -- registration -------------------------------------------------------------------------
    def register(self):
        """Register the real layer (moving) onto the virtual one (fixed) in the background."""
        from napari_virtualstain.core.qa import iter_register_layers

        try:
            fixed, moving = self._pair()
        except ValueError as err:
            self._fail(str(err))
            return None
        return self.runner.run(
            iter_register_layers,
            layer_pixels(fixed),
            layer_pixels(moving),
            virtual_direction=model_direction(fixed),
            on_done=self._registered,
            on_failed=self._fail,
            description="registering",
        )

    def _registered(self, registration):
        self.registration = registration
        self.status.setText(f"registered: score {registration.score:.3f} ({registration.notes})")
        self.show_registered()

    def show_registered(self):
        """Add the real slide in the virtual slide's frame (affine, or lazily warped)."""
        from .._napari.residual_layers import registered_layer_data

        fixed, moving = self._layer("virtual"), self._layer("real")
        if self.registration is None or moving is None or fixed is None:
            return None
        kwargs = {
            "name": moving.name,
            "units": tuple(getattr(fixed, "units", ("pixel", "pixel")))[-2:],
            "rgb": moving.rgb,
            "multiscale": moving.multiscale,
            # Provenance of the pair: the Ki-67 dock gives "Δ vs real" for declared pairs only.
            "metadata": {**dict(moving.metadata), "registered_to": fixed.name},
        }
        data = list(moving.data) if moving.multiscale else moving.data
        data, kwargs, _ = registered_layer_data(
            (data, kwargs, "image"), self.registration, layer_pixels(fixed).frame
        )
        if kwargs["name"] in self.viewer.layers:
            self.viewer.layers.remove(kwargs["name"])
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
        """Copy the ROI shapes onto the real slide (through the registration), as a new layer."""
        from .._napari.residual_layers import map_shapes

        shapes, fixed, moving = self._layer("roi"), self._layer("virtual"), self._layer("real")
        if shapes is None or self.registration is None or not len(shapes.data) or moving is None:
            self.status.setText("needs an ROI shapes layer, a real stain and a registration")
            return None
        polys = map_shapes(
            [self._world(shapes, s) for s in shapes.data],
            list(shapes.shape_type),
            self.registration,
            layer_pixels(fixed).frame,
            layer_pixels(moving).frame,
        )
        return self.viewer.add_shapes(
            polys,
            shape_type="polygon",
            name=f"{shapes.name} (real)",
            edge_color="yellow",
            face_color="transparent",
        )

    @staticmethod
    def _world(layer, vertices) -> np.ndarray:
        return np.array([layer.data_to_world(v) for v in np.asarray(vertices)])[:, -2:]

    # -- QA layers ----------------------------------------------------------------------------
    def region_of_choice(self, virtual=None):
        """(level, box, mask) of the view or the first ROI on the virtual stain's levels."""
        from napari_virtualstain.core.registration.frames import roi_region, view_region

        virtual = virtual or self._pair()[0]
        frame = layer_pixels(virtual).frame
        if self.region.currentIndex() == 1:
            shapes = self._layer("roi")
            if shapes is None or not len(shapes.data):
                raise ValueError("region is 'ROI' but no shapes layer with a shape is chosen")
            world = self._world(shapes, shapes.data[0])
            return roi_region(frame, shapes.shape_type[0], world, MAX_SIDE_PX)
        level = virtual.data_level if virtual.multiscale else 0
        level, box = view_region(frame, virtual.corner_pixels, level, MAX_SIDE_PX)
        return level, box, None

    def _kinds(self) -> tuple[str, ...]:
        return tuple(k for k, b in self.kind_boxes.items() if b.isChecked())

    def build(self):
        """Compute the residual layers off the GUI thread; layers are added when done."""
        from napari_virtualstain.core.qa import iter_layer_lazy_qa, iter_layer_qa

        self.last_result = None
        self.pending_layers = []  # a previous build's layers still queued are dropped
        try:
            virtual, real = self._pair()
            pixels = {"virtual": layer_pixels(virtual), "real": layer_pixels(real)}
            if self.region.currentIndex() == 2:
                args = (pixels["virtual"], pixels["real"], self._kinds(), self.registration)
                direction = {"virtual_direction": model_direction(virtual)}
                return self._run(iter_layer_lazy_qa, args, direction, "whole-slide QA")
            level, box, mask = self.region_of_choice(virtual)
            extra = {"virtual_direction": model_direction(virtual)}
            labels = self._layer("labels")
            if labels is not None:
                extra["labels"] = layer_pixels(labels)
            fwd, back = self.forward_edit.text().strip(), self.backward_edit.text().strip()
            if fwd or back:
                source = self._layer("source")
                if source is None or not (fwd and back):
                    raise ValueError("the cycle error needs a source layer and both generators")
                extra.update(source=layer_pixels(source), forward=fwd, backward=back)
        except (ValueError, IndexError, KeyError) as err:  # bad choices: shown, never raised
            self._fail(str(err))
            return None
        args = (pixels["virtual"], pixels["real"], level, box, self._kinds(), self.registration)
        return self._run(iter_layer_qa, args, {"mask": mask, **extra}, "QA layers")

    def _run(self, gen_fn, args, kwargs, description):
        self.summary.setPlainText("")
        self.legend.show_legend(None)
        return self.runner.run(
            gen_fn,
            *args,
            on_done=self._add_result,
            on_failed=self._fail,
            description=description,
            **kwargs,
        )

    def _add_result(self, result):
        """Show the summary now; add the layers one per event-loop turn.

        Each ``add_image`` costs napari 80-160 ms on the GUI thread (layer list, controls,
        visuals); five in one callback froze the window for 0.5-0.95 s (bench_gui_latency).
        """
        from .._napari.residual_layers import qa_layer_data

        self.last_result = result
        virtual = self._layer("virtual")
        units = getattr(virtual, "units", None) if virtual is not None else None
        self.summary.setPlainText("\n".join(summary_lines(result.summary, result.seconds)))
        self.pending_layers = list(qa_layer_data(result, units=units))
        self.status.setText(f"adding {len(self.pending_layers)} layers…")
        self._add_next_layer(result, None)

    def _add_next_layer(self, result, added) -> None:
        """One layer of ``result`` per call; a newer build or a failure ends the chain."""
        from qtpy.QtCore import QTimer

        from .._napari.residual_layers import layer_legend

        if result is not self.last_result:
            return
        if not self.pending_layers:
            self.status.setText(f"built {len(result.maps)} layers for {region_text(result.box)}")
            if added is not None:
                self.legend.show_legend(layer_legend(added))
            return
        data, kwargs, kind = self.pending_layers.pop(0)
        if kwargs["name"] in self.viewer.layers:
            self.viewer.layers.remove(kwargs["name"])
        added = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        QTimer.singleShot(0, lambda: self._add_next_layer(result, added))

    def _show_active_legend(self, event=None):
        from .._napari.residual_layers import layer_legend

        layer = self.viewer.layers.selection.active
        legend = layer_legend(layer) if layer is not None else None
        if legend is not None:
            self.legend.show_legend(legend)
