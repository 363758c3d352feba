"""The "Slide" dock widget: open a slide, show its metadata, add it (or an associated image)."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from napari_virtualstain.core.io import SUPPORTED_SUFFIXES, Slide, SlideReadError, open_slide
from napari_virtualstain.core.io.formatting import format_summary

from .._napari.layers import slide_layer_data
from .layouts import column, row
from .viewer_access import unproxied

FILE_FILTER = f"Slides ({' '.join('*' + s for s in SUPPORTED_SUFFIXES)});;All files (*)"


class SlideWidget(QWidget):
    """Open a slide (file or OME-Zarr folder), inspect it, add it as a lazy multiscale layer."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = unproxied(napari_viewer)  # see viewer_access
        self.slide: Slide | None = None

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("slide path (.svs .ndpi .tif .zarr .mrxs .scn .png ...)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self.open_path)
        self.info = QPlainTextEdit()
        self.info.setReadOnly(True)
        self.status = QLabel("")
        self.add_button = QPushButton("Add to viewer")
        self.add_button.setEnabled(False)
        self.add_button.clicked.connect(self.add_to_viewer)
        self.associated = QComboBox()
        self.show_associated_button = QPushButton("Show associated image")
        self.show_associated_button.setEnabled(False)
        self.show_associated_button.clicked.connect(self.show_associated)

        column(
            self,
            row(self.path_edit, browse),
            self.open_button,
            self.info,
            self.status,
            self.add_button,
            self.associated,
            self.show_associated_button,
        )

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open slide", "", FILE_FILTER)
        if path:
            self.path_edit.setText(path)
            self.open_path()

    def open_path(self) -> Slide | None:
        """Open the slide named in the path box (metadata only) and show its summary."""
        path = self.path_edit.text().strip()
        try:
            slide = open_slide(Path(path))
        except SlideReadError as exc:
            self.slide = None
            self.status.setText(str(exc))
            self.info.setPlainText("")
            self.add_button.setEnabled(False)
            self.show_associated_button.setEnabled(False)
            return None
        self.slide = slide
        self.info.setPlainText(format_summary(slide.summary()))
        self.status.setText(f"Opened {slide.name}")
        self.add_button.setEnabled(True)
        self.associated.clear()
        self.associated.addItems(sorted(slide.associated))
        self.show_associated_button.setEnabled(bool(slide.associated))
        return slide

    def add_to_viewer(self):
        if self.slide is None:
            return None
        data, kwargs, _ = slide_layer_data(self.slide)
        return self.viewer.add_image(data, **kwargs)

    def show_associated(self):
        if self.slide is None or not self.associated.currentText():
            return None
        key = self.associated.currentText()
        return self.viewer.add_image(
            self.slide.associated[key], rgb=True, name=f"{self.slide.name} {key}"
        )
