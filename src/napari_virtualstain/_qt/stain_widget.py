"""The "Virtual stain" dock widget: pick a slide layer and a model, start / stop the overlay.

It only reads values and calls one entry point (:func:`.._napari.virtual_layer.open_overlay`),
which opens the virtual stain off the GUI thread; the overlay then computes visible tiles in a
``thread_worker`` with progress in napari's activity dock.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._napari.virtual_layer import open_overlay


class VirtualStainWidget(QWidget):
    """Choose source layer, model (direction shown), device, precision, cache and opacity."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.overlay = None
        self._opening = None

        self.layer_combo = QComboBox()
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)  # a registry name or a checkpoint path
        self.model_combo.currentTextChanged.connect(self._show_direction)
        self.direction = QLabel("")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["auto", "fp32", "bf16", "fp16"])
        self.cache_edit = QLineEdit()
        self.cache_edit.setPlaceholderText("disk cache folder (optional, shared with the CLI)")
        self.mpp_spin = QDoubleSpinBox()
        self.mpp_spin.setDecimals(4)
        self.mpp_spin.setRange(0.0, 100.0)
        self.mpp_spin.setSpecialValueText("from slide")
        self.preview_check = QCheckBox("preview (coarser level, wrong magnification)")
        self.preview_level = QSpinBox()
        self.preview_level.setRange(1, 16)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(80)
        self.opacity.valueChanged.connect(self._set_opacity)
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("source layer", self.layer_combo)
        form.addRow("model", self.model_combo)
        form.addRow("direction", self.direction)
        form.addRow("device", self.device_combo)
        form.addRow("precision", self.precision_combo)
        form.addRow("cache", self.cache_edit)
        form.addRow("slide µm/px", self.mpp_spin)
        form.addRow(self.preview_check, self.preview_level)
        form.addRow("opacity", self.opacity)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)

        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._refresh_models()

    # -- choices ---------------------------------------------------------------------------
    def _refresh_layers(self, event=None) -> None:
        current = self.layer_combo.currentText()
        self.layer_combo.clear()
        for layer in self.viewer.layers:
            if getattr(layer, "rgb", False) and "virtualstain" not in (layer.metadata or {}):
                self.layer_combo.addItem(layer.name)
        if current:
            self.layer_combo.setCurrentText(current)

    def _refresh_models(self) -> None:
        from napari_virtualstain.core.models import list_models

        self._cards = {}
        for entry in list_models():
            self.model_combo.addItem(entry.name, str(entry.path))
            self._cards[entry.name] = entry.card

    def _show_direction(self, text: str) -> None:
        card = getattr(self, "_cards", {}).get(text)
        self.direction.setText(card.direction if card is not None else "(read from the model)")

    def _model(self) -> str:
        index = self.model_combo.currentIndex()
        text = self.model_combo.currentText().strip()
        data = self.model_combo.itemData(index) if index >= 0 else None
        return data if data and self.model_combo.itemText(index) == text else text

    def _set_opacity(self, value: int) -> None:
        if self.overlay is not None:
            self.overlay.layer.opacity = value / 100

    # -- start / stop ----------------------------------------------------------------------
    def start(self):
        """Open the virtual stain of the chosen layer (off the GUI thread) and overlay it."""
        self.stop()
        name = self.layer_combo.currentText()
        if not name or not self._model():
            self.status.setText("choose a source layer and a model")
            return None
        layer = self.viewer.layers[name]
        mpp = self.mpp_spin.value() or None
        if mpp is None and (layer.metadata or {}).get("mpp") is None:
            self.status.setText(
                f"{name!r} has no pixel size: enter the slide's µm/px (the model needs it)"
            )
            self.mpp_spin.setFocus()
            return None
        kwargs = {
            "device": self.device_combo.currentText(),
            "precision": self.precision_combo.currentText(),
            "cache_dir": self.cache_edit.text().strip() or None,
            "mpp": mpp,
        }
        if self.preview_check.isChecked():
            kwargs["preview_level"] = self.preview_level.value()
        self.status.setText(f"opening {self._model()} on {name}…")
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._opening = open_overlay(
            self.viewer, layer, self._model(), on_ready=self._ready, on_error=self._failed,
            opacity=self.opacity.value() / 100, **kwargs,
        )  # fmt: skip
        return self._opening

    def _ready(self, overlay) -> None:
        self._opening = None
        self.overlay = overlay
        self.direction.setText(overlay.vs.engine.card.direction)
        self.status.setText(overlay.vs.plan.statement)

    def _failed(self, exc: Exception) -> None:
        self._opening = None
        self.status.setText(f"could not start: {exc}")
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def stop(self) -> None:
        """Cancel the running work; the computed overlay stays in the viewer."""
        if self._opening is not None:
            self._opening.quit()
            self._opening = None
        if self.overlay is not None:
            self.overlay.stop()
            self.overlay = None
            self.status.setText("stopped")
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
