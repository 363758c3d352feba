"""The colour bar of a QA layer, shown in the QA dock: what the colours mean, with units."""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QLinearGradient, QPainter
from qtpy.QtWidgets import QLabel, QWidget

from .layouts import column, row, wrapped_label

BAR_HEIGHT_PX = 14


class ColourBar(QWidget):
    """A horizontal gradient through the legend's colour stops (two boxes for categories)."""

    def __init__(self) -> None:
        super().__init__()
        self.colors: tuple = ()
        self.categorical = False
        self.setMinimumHeight(BAR_HEIGHT_PX)
        self.setMaximumHeight(BAR_HEIGHT_PX)

    def set_colors(self, colors, categorical: bool = False) -> None:
        self.colors, self.categorical = tuple(colors), categorical
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self.colors:
            return
        painter = QPainter(self)
        rect = self.rect()
        qcolors = [QColor.fromRgbF(*map(float, c)) for c in self.colors]
        if self.categorical:
            step = rect.width() / len(qcolors)
            for i, color in enumerate(qcolors):
                painter.fillRect(int(i * step), 0, int(step) + 1, rect.height(), color)
        else:
            gradient = QLinearGradient(QPointF(0, 0), QPointF(rect.width(), 0))
            for i, color in enumerate(qcolors):
                gradient.setColorAt(i / max(len(qcolors) - 1, 1), color)
            painter.fillRect(rect, gradient)
        painter.setPen(QColor("grey"))
        painter.drawRect(rect.adjusted(0, 0, -1, -1))
        painter.end()


class LegendWidget(QWidget):
    """Title, colour bar, tick values and what each end means; hidden when there is nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.title, self.bar = wrapped_label(), ColourBar()
        self.ticks = [QLabel("") for _ in range(3)]
        self.meaning = wrapped_label()
        for label, align in zip(
            self.ticks, (Qt.AlignLeft, Qt.AlignHCenter, Qt.AlignRight), strict=True
        ):
            label.setAlignment(align)
        column(self, self.title, self.bar, row(*self.ticks), self.meaning).setContentsMargins(
            0, 4, 0, 4
        )
        self.legend = None
        self.setVisible(False)

    def show_legend(self, legend) -> None:
        """Show a ``_napari.residual_layers.Legend`` (None hides the widget)."""
        self.legend = legend
        if legend is None:
            self.setVisible(False)
            return
        categorical = legend.units == "nuclei"
        self.title.setText(f"<b>{legend.title}</b> — {legend.units}")
        self.bar.set_colors(legend.colors, categorical)
        texts = ("", "", "") if categorical else legend.ticks()
        for label, text in zip(self.ticks, texts, strict=True):
            label.setText(text)
        self.meaning.setText(f"left: {legend.low_means}; right: {legend.high_means}")
        self.setVisible(True)
