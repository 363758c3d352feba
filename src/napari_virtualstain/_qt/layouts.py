"""Layout builders the dock widgets share: rows and columns of widgets and layouts."""

from __future__ import annotations

from qtpy.QtWidgets import QBoxLayout, QHBoxLayout, QLabel, QLayout, QVBoxLayout, QWidget


def _fill(layout: QBoxLayout, items) -> QBoxLayout:
    for item in items:
        if isinstance(item, QLayout):
            layout.addLayout(item)
        else:
            layout.addWidget(item)
    return layout


def row(*items: QWidget | QLayout) -> QHBoxLayout:
    """``items`` (widgets or layouts) side by side, left to right."""
    return _fill(QHBoxLayout(), items)


def column(parent: QWidget, *items: QWidget | QLayout) -> QVBoxLayout:
    """``parent``'s layout: ``items`` (widgets or layouts) top to bottom."""
    return _fill(QVBoxLayout(parent), items)


def wrapped_label(text: str = "") -> QLabel:
    """A label whose long text wraps (status lines, notes)."""
    label = QLabel(text)
    label.setWordWrap(True)
    return label
