"""Ki-67: per-nucleus DAB positivity, ratios, bin and grade; the ROI pipeline; hot spot; export.

- ``measure``: nuclei measurements, classes, ``Ki67Result``, bin and WHO grade;
- ``pipeline``: ROIs of a slide through a segmenter to results (``iter_measure_rois``);
- ``hotspot``: the window with the highest labelling index;
- ``stain_check``: does the image look like H-DAB (refuse H&E, greyscale, foreign stains);
- ``export``: CSV, JSON, GeoJSON and label files, one policy for ROIs too large to outline.
"""

from __future__ import annotations

from .export import (
    write_nuclei_csv,
    write_results_csv,
    write_run_csv,
    write_run_geojson,
    write_run_json,
    write_run_labels,
)
from .histogram import DabHistogram, dab_histograms
from .hotspot import Hotspot, find_hotspot, find_run_hotspot
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
from .pairs import declared_real, is_virtual, same_region_differences
from .pipeline import iter_measure_rois, measure_rois
from .run import RatioRun, RoiMeasurement
from .stain_check import UNVERIFIED, StainCheck, StainCheckError, check_hdab

__all__ = [
    "MIN_NUCLEI_FOR_GRADE",
    "QUPATH_INTENSITY_THRESHOLDS",
    "RATIO_BINS",
    "DabHistogram",
    "Hotspot",
    "Ki67Config",
    "Ki67Result",
    "Nuclei",
    "RatioRun",
    "RoiMeasurement",
    "StainCheck",
    "StainCheckError",
    "UNVERIFIED",
    "check_hdab",
    "classify",
    "dab_histograms",
    "declared_real",
    "is_virtual",
    "same_region_differences",
    "find_hotspot",
    "find_run_hotspot",
    "iter_measure_rois",
    "measure_nuclei",
    "measure_rois",
    "ratio_bin",
    "summarise",
    "who_grade",
    "write_nuclei_csv",
    "write_results_csv",
    "write_run_csv",
    "write_run_geojson",
    "write_run_json",
    "write_run_labels",
]
