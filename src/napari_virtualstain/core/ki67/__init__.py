"""Ki-67: per-nucleus DAB positivity, ratios, bin and grade; the ROI pipeline; hot spot; export.

- ``measure``: nuclei measurements, classes, ``Ki67Result``, bin and WHO grade;
- ``pipeline``: ROIs of a slide through a segmenter to results (``iter_measure_rois``);
- ``hotspot``: the window with the highest labelling index;
- ``export``: CSV files.
"""

from __future__ import annotations

from .export import write_nuclei_csv, write_results_csv
from .hotspot import Hotspot, find_hotspot
from .measure import (
    MIN_NUCLEI_FOR_GRADE,
    QUPATH_INTENSITY_THRESHOLDS,
    RATIO_BINS,
    Ki67Config,
    Ki67Result,
    Nuclei,
    classify,
    measure_nuclei,
    ratio_bin,
    summarise,
    who_grade,
)
from .pipeline import RatioRun, RoiMeasurement, iter_measure_rois, measure_rois

__all__ = [
    "MIN_NUCLEI_FOR_GRADE",
    "QUPATH_INTENSITY_THRESHOLDS",
    "RATIO_BINS",
    "Hotspot",
    "Ki67Config",
    "Ki67Result",
    "Nuclei",
    "RatioRun",
    "RoiMeasurement",
    "classify",
    "find_hotspot",
    "iter_measure_rois",
    "measure_nuclei",
    "measure_rois",
    "ratio_bin",
    "summarise",
    "who_grade",
    "write_nuclei_csv",
    "write_results_csv",
]
