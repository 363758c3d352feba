"""Ki-67 results to files: per-nucleus and per-ROI CSV."""

from __future__ import annotations

import csv
from dataclasses import fields
from pathlib import Path

import numpy as np

from .measure import Ki67Result, Nuclei


def write_nuclei_csv(path, nuclei) -> Path:
    """Per-nucleus CSV: label, y, x, area_um2, dab_od_mean, positive, the other measures, roi.

    ``nuclei`` is a ``Nuclei`` or a list of (ROI name, ``Nuclei``) pairs (one file for all
    ROIs). ``y`` and ``x`` are level-0 pixels.
    """
    path = Path(path)
    groups = [("", nuclei)] if isinstance(nuclei, Nuclei) else list(nuclei)
    first = ["label", "y", "x", "area_um2", "dab_od_mean", "positive"]
    order = first + [f.name for f in fields(Nuclei) if f.name not in first]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*order, "roi"])
        for roi_name, group in groups:
            cols = group.columns()
            for i in range(len(group)):
                writer.writerow([_fmt(cols[c][i]) for c in order] + [roi_name])
    return path


def write_results_csv(path, results: list[Ki67Result]) -> Path:
    """Per-ROI CSV, one row per result."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        names = [f.name for f in fields(Ki67Result)]
        writer = csv.writer(fh)
        writer.writerow(names)
        for r in results:
            d = r.to_dict()
            writer.writerow(["; ".join(d[n]) if n == "warnings" else _fmt(d[n]) for n in names])
    return path


def _fmt(value):
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return "" if value is None else value
