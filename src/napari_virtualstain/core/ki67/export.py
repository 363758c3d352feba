"""Ki-67 results to files: per-nucleus and per-ROI CSV, JSON, QuPath GeoJSON and a label image.

The widget and the CLI both write through here, so they share one policy for ROIs too large to
hold a label image (``RoiMeasurement.labels is None``): their results are always written, and
their nuclei, which have no outlines, are left out of the GeoJSON and the label image; the
functions return (or raise with) the names of those ROIs so the caller can say so.
Every file is written atomically: a failed export leaves the previous file as it was.
"""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_open, atomic_path, write_json_atomic
from .measure import Ki67Result, Nuclei

# The per-ROI keys other tools rely on, first and in this order (``virtualstain ratio --json``).
JSON_KEYS = (
    "name",
    "n_nuclei",
    "n_positive",
    "labelling_index",
    "area_ratio",
    "h_score",
    "bin",
    "who_grade",
    "nuclei_area_um2",
    "positive_area_um2",
)


def write_nuclei_csv(path, nuclei) -> Path:
    """Per-nucleus CSV: label, y, x, area_um2, dab_od_mean, positive, the other measures, roi.

    ``nuclei`` is a ``Nuclei`` or a list of (ROI name, ``Nuclei``) pairs (one file for all
    ROIs). ``y`` and ``x`` are level-0 pixels.
    """
    path = Path(path)
    groups = [("", nuclei)] if isinstance(nuclei, Nuclei) else list(nuclei)
    first = ["label", "y", "x", "area_um2", "dab_od_mean", "positive"]
    order = first + [f.name for f in fields(Nuclei) if f.name not in first]
    with atomic_open(path, "w", newline="") as fh:
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
    names = [f.name for f in fields(Ki67Result)]
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for r in results:
            d = r.to_dict()
            writer.writerow(["; ".join(d[n]) if n == "warnings" else _fmt(d[n]) for n in names])
    return path


def write_run_csv(nuclei_path, rois_path, run) -> tuple[Path, Path]:
    """A run's per-nucleus and per-ROI CSV files."""
    write_nuclei_csv(nuclei_path, [(m.roi.name, m.nuclei) for m in run.measurements])
    return Path(nuclei_path), write_results_csv(rois_path, run.results)


def run_json(run, provenance: dict | None = None) -> dict:
    """Per-ROI results (``JSON_KEYS`` first) and provenance, JSON-ready."""
    rois = []
    for m in run.measurements:
        d = m.result.to_dict()
        rois.append(
            {**{k: d[k] for k in JSON_KEYS}, **{k: v for k, v in d.items() if k not in JSON_KEYS}}
        )
    return {"rois": rois, "provenance": provenance or run.provenance}


def write_run_json(path, run, provenance: dict | None = None) -> Path:
    """``run_json`` to ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, run_json(run, provenance))


def unoutlined_rois(run) -> list[str]:
    """Names of the ROIs too large to keep a label image (their nuclei have no outlines)."""
    return [m.roi.name for m in run.measurements if m.labels is None]


def write_run_geojson(path, run) -> list[str]:
    """ROIs (with their results) and classified nuclei as QuPath GeoJSON.

    Returns the names of the ROIs whose nuclei were left out (too large to outline); their
    results are in the file all the same.
    """
    from ..geojson import nuclei_features, roi_features, write_geojson

    feats = roi_features([m.roi for m in run.measurements], run.mpp, run.results)
    for m in run.measurements:
        if m.labels is not None:
            feats += nuclei_features(m.labels, m.nuclei, m.origin_px, m.config.class_names)
    write_geojson(path, feats)
    return unoutlined_rois(run)


def write_run_labels(path, run, provenance: dict | None = None) -> Path:
    """The run's nuclei as one uint32 label TIFF (origin and mpp in its description).

    Raises ``ValueError`` naming the ROIs too large for a label image; nothing is written then.
    """
    import tifffile

    labels, (y0, x0) = run.labels_union()
    meta = {
        "origin_yx_px": [int(y0), int(x0)],
        "mpp": run.mpp,
        "provenance": provenance or run.provenance,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, labels.astype("uint32"), compression="zlib", description=json.dumps(meta)
        )
    return path


def _fmt(value):
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return "" if value is None else value
