"""Reporting helpers shared by ``virtualstain eval`` and scripts: mean ± sd tables and PNG plots.

Plots use matplotlib's Agg backend through an explicit ``Figure`` (no pyplot state), so they work
headless and never touch a GUI event loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (sd 0 for a single value)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def fmt_mean_sd(values: Sequence[float], digits: int = 4) -> str:
    """``0.8123 ± 0.0210 (n=12)``; infinite values (identical images) are counted apart."""
    n_inf = sum(1 for x in values if x is not None and math.isinf(x))
    m, s = mean_sd(values)
    text = "n/a" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"
    n = sum(1 for x in values if x is not None and np.isfinite(x))
    return f"{text} (n={n}{f', {n_inf} inf' if n_inf else ''})"


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in header]] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def _figure(size=(5.0, 4.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(111)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


def plot_curves(x, curves: dict[str, Sequence[float]], path, xlabel: str, title: str) -> Path:
    """Line plot of several metrics against one x (e.g. F1 against the IoU threshold)."""
    fig, ax = _figure()
    for name, y in curves.items():
        ax.plot(x, y, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], path, title: str) -> Path:
    """Counts heat map, rows = true class, columns = predicted class."""
    fig, ax = _figure((4.5, 4.0))
    m = np.asarray(matrix)
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(
            j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black"
        )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def plot_ratio_scatter(pred, truth, path, band: float = 0.05) -> Path:
    """Predicted against true ratio, the identity line and a ±``band`` band."""
    fig, ax = _figure((4.5, 4.5))
    t = np.linspace(0, 1, 2)
    ax.fill_between(t, t - band, t + band, color="tab:green", alpha=0.2, label=f"±{band:g}")
    ax.plot(t, t, color="tab:green")
    ax.scatter(truth, pred, s=12)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("true ratio")
    ax.set_ylabel("predicted ratio")
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_per_item(values: dict[str, Sequence[float]], path, title: str) -> Path:
    """Box plot of per-image values of each metric (values on very different scales are split)."""
    fig, axes = None, None
    names = list(values)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.2 * max(1, len(names)), 3.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=False):
        v = [x for x in values[name] if np.isfinite(x)]
        ax.boxplot(v if v else [np.nan])
        ax.set_title(name)
        ax.set_xticks([])
    fig.suptitle(title)
    return _save(fig, path)


def plot_histograms(samples: dict[str, Sequence[float]], path, xlabel: str, title: str) -> Path:
    """Overlaid histograms of one measure in several sets (e.g. the DAB fraction)."""
    fig, ax = _figure()
    for name, v in samples.items():
        ax.hist(np.asarray(v, dtype=float), bins=20, range=(0, 1), alpha=0.5, label=name)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)
