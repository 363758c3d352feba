"""The nuclear DAB OD histogram per ROI, with the thresholds drawn (values from core)."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QWidget

from .layouts import column

NEGATIVE_COLOR = "#2870ff"
# One threshold: negative / positive; three: negative / 1+ / 2+ / 3+ (QuPath's class colours).
CLASS_COLORS = {1: ("#e02020",), 3: ("#ffd700", "#e19632", "#c83232")}


class DabHistogramView(QWidget):
    """A ROI chooser above a matplotlib canvas; ``show_histograms`` takes core histograms."""

    def __init__(self) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        # Fixed margins, not a constrained layout: a redraw runs on the GUI thread, and the
        # layout engine made it 135-180 ms instead of 85-135 ms (a repaint 95 -> 55 ms).
        self.figure = Figure(figsize=(3.2, 2.2), dpi=100, layout=None)
        self.figure.subplots_adjust(left=0.2, bottom=0.2, right=0.97, top=0.88)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(210)
        self.axes = self.figure.add_subplot(1, 1, 1)
        self.roi_combo = QComboBox()
        self.roi_combo.setToolTip("ROI whose nuclear DAB OD distribution is shown")
        self.roi_combo.currentIndexChanged.connect(self._draw)
        self.histograms: list = []
        self.title = ""
        column(self, self.roi_combo, self.canvas).setContentsMargins(0, 0, 0, 0)
        self._draw()

    def show_histograms(self, histograms: list, title: str = "") -> None:
        """Show ``core.ki67.DabHistogram``s (one per ROI) of one image."""
        self.histograms, self.title = list(histograms), title
        self.roi_combo.blockSignals(True)
        self.roi_combo.clear()
        self.roi_combo.addItems([h.roi for h in self.histograms])
        self.roi_combo.blockSignals(False)
        self._draw()

    def current(self):
        i = self.roi_combo.currentIndex()
        return self.histograms[i] if 0 <= i < len(self.histograms) else None

    def _draw(self, *_):
        ax = self.axes
        ax.clear()
        h = self.current()
        ax.set_xlabel("nuclear DAB OD (mean)", fontsize=8)
        ax.set_ylabel("nuclei", fontsize=8)
        ax.tick_params(labelsize=7)
        if h is None:
            ax.text(0.5, 0.5, "no results yet", ha="center", va="center", transform=ax.transAxes)
            self.canvas.draw_idle()
            return
        left, widths = h.edges_od[:-1], h.edges_od[1:] - h.edges_od[:-1]
        palette = (NEGATIVE_COLOR, *CLASS_COLORS[len(h.thresholds_od)])
        colors = [palette[c] for c in h.bin_classes]
        ax.bar(left, h.counts, width=widths, align="edge", color=colors, linewidth=0)
        # Negatives pile up near 0 OD; a log axis keeps the tail around the thresholds visible.
        if h.counts.max(initial=0) > 0:
            ax.set_yscale("log")
            ax.set_ylabel("nuclei (log)", fontsize=8)
        for t in h.thresholds_od:
            ax.axvline(t, color="k", linestyle="--", linewidth=1)
            ax.text(t, 1.0, f" {t:g}", transform=ax.get_xaxis_transform(), fontsize=7, va="top")
        li = 100 * h.n_positive / h.n_nuclei if h.n_nuclei else 0.0
        ax.set_title(
            f"{self.title} {h.roi}: {h.n_positive}/{h.n_nuclei} positive ({li:.1f} %)".strip(),
            fontsize=8,
        )
        self.canvas.draw_idle()
