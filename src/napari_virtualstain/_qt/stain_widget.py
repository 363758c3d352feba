"""The "Virtual stain" dock widget: the live overlay, a whole-slide background run, and saving.

It reads values and calls one entry point per button: :func:`.virtual_overlay.open_overlay`
(Start), :meth:`.virtual_overlay.VirtualOverlay.whole_slide` (fill every zoom level from the
tile cache) and ``core.engine.stain_slide`` (Save…, OME-Zarr). Long work runs in workers
through :class:`.runner.WorkerRunner`, with progress and Cancel.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
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

from .._napari.layers import layer_mpp
from ..core.models.device import PRECISION_CHOICES
from .background import warm_up_torch
from .runner import WorkerRunner, report_if_bug
from .viewer_access import unproxied, watch_layers
from .virtual_overlay import (
    checked_source_stain,
    fill_whole_slide,
    on_new_overlay,
    open_overlay,
    overlays_of,
)


def default_tile_cache() -> str:
    """The tile cache the widget offers (shared with ``virtualstain stain --cache``)."""
    from napari_virtualstain.core.models.precision import user_cache_dir

    return str(user_cache_dir() / "tiles")


class VirtualStainWidget(QWidget):
    """Source layer, model (its direction shown at once), device, precision, cache, opacity."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = unproxied(napari_viewer)  # see viewer_access
        self._opening = None
        self._cards: dict = {}

        self.layer_combo = QComboBox()
        self.layer_combo.currentTextChanged.connect(self._source_changed)
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)  # a registry name or a checkpoint path
        self.model_combo.currentTextChanged.connect(self._show_direction)
        self.direction = QLabel("")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(list(PRECISION_CHOICES))
        self.precision_combo.setToolTip("auto: a reduced precision only where measured faster")
        self.precision_note = QLabel("")  # the choices and why: the dock's full width, small
        self.precision_note.setWordWrap(True)
        font = self.precision_note.font()
        font.setPointSizeF(font.pointSizeF() * 0.85)
        self.precision_note.setFont(font)
        self.cache_edit = QLineEdit(default_tile_cache())
        self.cache_edit.setToolTip("disk tile cache, shared with the CLI; empty: memory only")
        self.mpp_spin = QDoubleSpinBox()
        self.mpp_spin.setDecimals(4)
        self.mpp_spin.setRange(0.0, 100.0)
        self.mpp_spin.setSpecialValueText("from slide")
        self.preview_check = QCheckBox("PREVIEW: coarser level, wrong magnification")
        self.preview_level = QSpinBox()
        self.preview_level.setRange(1, 16)
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(1, 100_000)
        self.budget_spin.setValue(48)
        self.budget_spin.setToolTip("most tissue tiles computed for one view")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.valueChanged.connect(self._set_opacity)
        self.force_check = QCheckBox("stain anyway if the slide is not the model's input stain")
        self.force_check.setToolTip(
            "Start refuses a slide that does not look like the stain the model expects (a "
            "Ki-67 slide given to an H&E -> Ki-67 model); ticked, it stains it and notes it"
        )
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.whole_button = QPushButton("Whole slide in background")
        self.whole_button.clicked.connect(self.whole_slide)
        self.whole_cancel = QPushButton("Cancel")
        self.save_button = QPushButton("Save whole-slide virtual stain…")
        self.save_button.clicked.connect(self.save)
        self.save_cancel = QPushButton("Cancel")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.job_status = QLabel("")
        self.job_status.setWordWrap(True)
        self.whole_runner = WorkerRunner(self.job_status, self.whole_cancel, [self.whole_button])
        self.save_runner = WorkerRunner(self.job_status, self.save_cancel, [self.save_button])

        form = QFormLayout()
        form.addRow("source layer", self.layer_combo)
        form.addRow("model", self.model_combo)
        form.addRow("direction", self.direction)
        form.addRow("device", self.device_combo)
        form.addRow("precision", self.precision_combo)
        form.addRow(self.precision_note)
        form.addRow("tile cache", self.cache_edit)
        form.addRow("slide µm/px", self.mpp_spin)
        form.addRow("tiles per view", self.budget_spin)
        form.addRow(self.preview_check, self.preview_level)
        form.addRow(self.force_check)
        form.addRow("opacity", self.opacity)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for pair in ((self.start_button, self.stop_button), (self.whole_button, self.whole_cancel),
                     (self.save_button, self.save_cancel)):  # fmt: skip
            row = QHBoxLayout()
            for button in pair:
                row.addWidget(button)
            layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addWidget(self.job_status)

        watch_layers(self.viewer, self._refresh_layers)
        self._refresh_models()
        self._refresh_layers()
        on_new_overlay(self.viewer, lambda overlay: self._source_changed())
        # torch loads while a model is picked, not after Start (background.py)
        self.warmup = warm_up_torch()

    # -- choices ---------------------------------------------------------------------------
    def _refresh_layers(self, event=None) -> None:
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for layer in self.viewer.layers:
            if getattr(layer, "rgb", False) and "virtualstain" not in (layer.metadata or {}):
                self.layer_combo.addItem(layer.name)
        if current:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        self._source_changed()

    def _refresh_models(self) -> None:
        from napari_virtualstain.core.models import list_models

        for entry in list_models():
            self.model_combo.addItem(entry.name, str(entry.path))
            self._cards[entry.name] = entry.card
        self._show_direction(self.model_combo.currentText())

    def _show_direction(self, text: str) -> None:
        card = self._cards.get(text) or _card_at(text)
        if card is not None:
            self.direction.setText(f"{card.direction}  (virtual {card.target_stain})")
        else:
            self.direction.setText("unknown: no card found for this model")

    def _model(self) -> str:
        index = self.model_combo.currentIndex()
        text = self.model_combo.currentText().strip()
        data = self.model_combo.itemData(index) if index >= 0 else None
        return data if data and self.model_combo.itemText(index) == text else text

    @property
    def overlay(self):
        """The overlay over the chosen source layer (the widget's, the demo's or a script's)."""
        name = self.layer_combo.currentText()
        found = [o for o in overlays_of(self.viewer) if o.source.name == name]
        return found[-1] if found else None

    def _source_changed(self, *args) -> None:
        overlay = self.overlay
        running = overlay is not None and overlay.following
        self.start_button.setEnabled(self._opening is None and not running)
        self.stop_button.setEnabled(self._opening is not None or running)
        self.whole_button.setEnabled(overlay is not None and not self.whole_runner.running)
        if overlay is not None and self._overlay_status not in overlay.listeners:
            overlay.listeners.append(self._overlay_status)
            overlay.layer.events.opacity.connect(self._opacity_changed)
        if overlay is not None:  # this widget's run, or one the demo or a script opened
            self._overlay_status(overlay)
            self._opacity_changed()
            card, engine = overlay.vs.engine.card, overlay.vs.engine
            self.direction.setText(f"{card.direction}  (virtual {card.target_stain})")
            plan = overlay.vs.plan
            halo = engine.halo_choice.statement if engine.halo_choice else ""
            halo = halo or f"halo {plan.halo_px} px ({plan.mode})"
            self.precision_note.setText(
                f"{engine.precision} on {engine.device}: {engine.precision_reason}; "
                f"{engine.layout_reason}; {halo}"
            )

    def _overlay_status(self, overlay) -> None:
        if overlay is self.overlay:
            self.status.setText(f"{overlay.vs.name}: {overlay.status}")

    def _set_opacity(self, value: int) -> None:
        if self.overlay is not None:
            self.overlay.layer.opacity = value / 100

    def _opacity_changed(self, event=None) -> None:
        """The slider follows the overlay's opacity set elsewhere (napari's layer controls)."""
        overlay = self.overlay
        if overlay is not None:
            self.opacity.blockSignals(True)
            self.opacity.setValue(round(100 * overlay.layer.opacity))
            self.opacity.blockSignals(False)

    # -- start / stop ----------------------------------------------------------------------
    def _kwargs(self, layer) -> dict | None:
        mpp = self.mpp_spin.value() or None
        if mpp is None and layer_mpp(layer) is None:
            self.status.setText(
                f"{layer.name!r} has no pixel size: enter the slide's µm/px (the model needs it)"
            )
            self.mpp_spin.setFocus()
            return None
        kwargs = {
            "device": self.device_combo.currentText(),
            "precision": self.precision_combo.currentText(),
            "cache_dir": self.cache_edit.text().strip() or None,
            "mpp": mpp,
            "force_source_stain": self.force_check.isChecked(),
        }
        if self.preview_check.isChecked():
            kwargs["preview_level"] = self.preview_level.value()
        return kwargs

    def _chosen_source(self, status) -> tuple[str, object, dict] | None:
        """The chosen source layer's name, the layer and the engine keywords for it; None when no
        layer or no model is chosen (said on the ``status`` label) or the settings are invalid."""
        name = self.layer_combo.currentText()
        if not name or not self._model():
            status.setText("choose a source layer and a model")
            return None
        layer = self.viewer.layers[name]
        kwargs = self._kwargs(layer)
        if kwargs is None:
            return None
        return name, layer, kwargs

    def start(self):
        """Open the virtual stain of the chosen layer (off the GUI thread) and overlay it.

        After Stop, the same slide and settings resume the same overlay; other settings
        reuse its layer (no "[1]" copies).
        """
        chosen = self._chosen_source(self.status)
        if chosen is None:
            return None
        name, layer, kwargs = chosen
        old = self.overlay
        if old is not None and old.following:
            old.stop()
        if old is not None and getattr(old, "start_kwargs", None) == (self._model(), kwargs):
            old.budget_tiles = self.budget_spin.value()
            old.resume()
            self._source_changed()
            return None
        reuse = old.layer if old is not None else None
        if old is not None:
            old.close()
        self.status.setText(f"opening {self._model()} on {name}…")
        key = (self._model(), dict(kwargs))

        def ready(overlay) -> None:
            overlay.start_kwargs = key
            self._ready(overlay)

        self._opening = open_overlay(
            self.viewer, layer, self._model(), on_ready=ready, on_error=self._failed,
            opacity=self.opacity.value() / 100, reuse_layer=reuse,
            budget_tiles=self.budget_spin.value(), **kwargs,
        )  # fmt: skip
        self._source_changed()
        return self._opening

    def _ready(self, overlay) -> None:
        self._opening = None
        self._source_changed()
        self.status.setText(f"{overlay.vs.plan.statement}; {overlay.status}")

    def _failed(self, exc: Exception) -> None:
        self._opening = None
        self.status.setText(f"could not start: {exc}")
        report_if_bug(exc)
        self._source_changed()

    def stop(self) -> None:
        """Stop following the camera; what was computed stays in the viewer."""
        if self._opening is not None:
            self._opening.quit()
            self._opening = None
        self.whole_runner.cancel()
        overlay = self.overlay
        if overlay is not None:
            overlay.stop()
        self.status.setText("stopped")
        self._source_changed()

    # -- whole slide / save ------------------------------------------------------------------
    def whole_slide(self):
        """Fill every tissue tile (nearest the view first) from the tile cache, in a worker."""
        overlay = self.overlay
        if overlay is None:
            self.job_status.setText("press Start first")
            return None
        if overlay.vs.cache.disk is None:
            self.job_status.setText("note: no tile cache folder, so this run cannot be resumed")
        return self.whole_runner.run(
            fill_whole_slide, overlay.vs, overlay.buffers, lambda: overlay.view_centre,
            overlay.mark_dirty,
            on_done=lambda n: self.job_status.setText(f"whole slide done ({n} tiles computed)"),
            description=f"{overlay.vs.name}: whole slide",
        )  # fmt: skip

    def save(self, out: str | None = None):
        """Write the whole-slide virtual stain to OME-Zarr (the batch engine, in a worker)."""
        chosen = self._chosen_source(self.job_status)
        if chosen is None:
            return None
        name, layer, kwargs = chosen
        if out is None:
            out, _ = QFileDialog.getSaveFileName(self, "Save virtual stain", f"{name}-virtual.zarr")
            if not out:
                return None
        from napari_virtualstain._napari.virtual_layer import slide_from_layer

        slide = slide_from_layer(layer, kwargs.pop("mpp"))
        return self.save_runner.run(
            save_slide_progress, slide, self._model(), out, **kwargs,
            on_done=lambda r: self.job_status.setText(f"saved: {r.summary()}"),
            description=f"saving {Path(out).name}",
        )  # fmt: skip


def _card_at(text: str):
    from napari_virtualstain.core.models import ModelCard

    path = Path(text) if text else None
    if path is None:
        return None
    for card in (path / "card.json", path.with_suffix(".json")):
        try:
            if card.is_file():
                return ModelCard.from_json(card)
        except Exception:  # an unreadable card: the run will say why
            return None
    return None


def save_slide_progress(slide, model, out, **kwargs):
    """``stain_slide`` as a progress generator (for ``WorkerRunner``); Cancel stops it."""
    import queue
    import threading

    from napari_virtualstain.core.engine import stain_slide
    from napari_virtualstain.core.progress import Cancelled

    force = kwargs.pop("force_source_stain", False)
    # refuses a mismatch; a forced verdict goes into the output's provenance
    kwargs["source_check"] = checked_source_stain(slide, model, kwargs.get("device", "auto"), force)
    reports: queue.Queue = queue.Queue()
    stop = threading.Event()
    result: dict = {}

    def progress(p) -> None:
        reports.put(p)
        if stop.is_set():
            raise Cancelled("saving cancelled")

    def run() -> None:
        try:
            result["value"] = stain_slide(slide, model, out, progress=progress, **kwargs)
        except BaseException as err:  # handed to the worker thread below
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not reports.empty():
            try:
                yield reports.get(timeout=0.2)
            except queue.Empty:
                pass
    finally:
        stop.set()
        thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
