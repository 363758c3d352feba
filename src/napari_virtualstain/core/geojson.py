"""QuPath GeoJSON: ROIs as annotations, nuclei as classified detections.

QuPath writes coordinates as [x, y] in level-0 pixels (pixel (i, j) spans [i, i + 1)). It has used
three layouts, all read here:

- 0.2: a bare JSON list of features, the object type in ``"id"`` ("PathAnnotationObject"...);
- 0.3: ``properties.object_type`` ("annotation", "detection", "cell", "tile", "tma_core");
- 0.4+: a ``FeatureCollection`` with ``properties.objectType``.

Measurements are a list of ``{"name", "value"}`` (up to 0.3) or a dict (0.4+). ``classification``
is a name or an object (``{"name", "color"}``, or ``{"names": [...]}`` for derived classes). Cells
carry their nucleus as ``nucleusGeometry`` at Feature level, beside ``geometry``. Objects may nest
their children under ``childObjects``. Geometry is made valid with shapely (self-intersecting
outlines become their valid parts) and areas subtract holes.

We write the 0.4+ layout. QuPath 0.3 reads neither ``objectType`` nor measurement dicts, so it
would import our detections as annotations without measurements (not tested in QuPath).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

from .geojson_read import Detection, GeoJSONObjects, read_geojson
from .io.atomic import write_text_atomic
from .ki67.measure import Ki67Result, Nuclei
from .roi import ROI

__all__ = [
    "CLASS_COLORS",
    "MEASUREMENT_NAMES",
    "Detection",
    "GeoJSONObjects",
    "label_features",
    "nuclei_features",
    "read_geojson",
    "roi_features",
    "write_geojson",
]

# QuPath's default class colours.
CLASS_COLORS = {
    "Positive": [200, 50, 50],
    "Negative": [112, 112, 225],
    "1+": [255, 215, 0],
    "2+": [225, 150, 50],
    "3+": [200, 50, 50],
}
# Names QuPath's positive-cell detection uses for the same measurements.
MEASUREMENT_NAMES = {
    "area_um2": "Nucleus: Area µm^2",
    "dab_od_mean": "Nucleus: DAB OD mean",
    "dab_od_max": "Nucleus: DAB OD max",
    "dab_od_median": "Nucleus: DAB OD median",
    "hematoxylin_od_mean": "Nucleus: Hematoxylin OD mean",
}


def _ring_xy(poly_yx_px: np.ndarray) -> list[list[float]]:
    ring = [[round(float(x), 2), round(float(y), 2)] for y, x in poly_yx_px]
    return ring + [ring[0]]


def _feature(rings, object_type: str, name: str, cls: str | None, measurements: dict) -> dict:
    """A Feature whose Polygon has ``rings``: its outline, then its holes."""
    props: dict = {"objectType": object_type, "isLocked": False}
    if name:
        props["name"] = name
    if cls is not None:
        props["classification"] = {"name": cls, "color": CLASS_COLORS.get(cls, [128, 128, 128])}
    if measurements:
        props["measurements"] = measurements
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": {"type": "Polygon", "coordinates": rings},
        "properties": props,
    }


def roi_features(rois: list[ROI], mpp: float, results: list[Ki67Result] | None = None):
    """ROIs as QuPath annotations (ellipses become polygons, holes interior rings); results
    become measurements."""
    feats = []
    for i, roi in enumerate(rois):
        m = {}
        if results is not None:
            r = results[i]
            m = {
                "Num Detections": r.n_nuclei,
                "Num Positive": r.n_positive,
                "Num Negative": r.n_negative,
                "Positive %": 100.0 * r.labelling_index,
                "Positive area ratio": r.area_ratio,
                "H-score": r.h_score,
            }
        rings = [_ring_xy(ring / mpp) for ring in (roi.polygon_um(), *roi.holes_um())]
        feats.append(_feature(rings, "annotation", roi.name, None, m))
    return feats


def nuclei_features(
    labels: np.ndarray,
    nuclei: Nuclei,
    origin_px: tuple[int, int],
    class_names: tuple[str, ...] = ("Negative", "Positive"),
) -> list[dict]:
    """Each nucleus of ``labels`` (placed at ``origin_px``) as a classified QuPath detection.

    The class is "Positive"/"Negative", or "Negative"/"1+"/"2+"/"3+" with three thresholds.
    """
    from skimage import measure

    index = {int(lab): i for i, lab in enumerate(nuclei.label)}
    feats = []
    for region in measure.regionprops(labels):
        i = index.get(int(region.label))
        if i is None:
            continue
        ring = _outline(region.image, region.bbox[:2], origin_px)
        if ring is None:
            continue
        cls_idx = int(nuclei.intensity_class[i]) if len(class_names) > 2 else 1
        cls = class_names[cls_idx] if nuclei.positive[i] else class_names[0]
        meas = {q: float(getattr(nuclei, k)[i]) for k, q in MEASUREMENT_NAMES.items()}
        meas["Label"] = int(region.label)
        feats.append(_feature([ring], "detection", "", cls, meas))
    return feats


def label_features(
    labels: np.ndarray, origin_px: tuple[int, int] = (0, 0), mpp: float | None = None
) -> list[dict]:
    """Each object of ``labels`` (placed at ``origin_px``) as an unclassified QuPath detection.

    Measurements: its label id, and its area in µm² when ``mpp`` is given.
    """
    from skimage import measure

    feats = []
    for region in measure.regionprops(labels):
        ring = _outline(region.image, region.bbox[:2], origin_px)
        if ring is None:
            continue
        meas = {"Label": int(region.label)}
        if mpp is not None:
            meas[MEASUREMENT_NAMES["area_um2"]] = float(region.area) * mpp**2
        feats.append(_feature([ring], "detection", "", None, meas))
    return feats


def _outline(mask: np.ndarray, top_left, origin_px):
    """The outer contour of one nucleus mask as an [x, y] ring in whole-image pixels."""
    from skimage import measure

    contours = measure.find_contours(np.pad(mask, 1).astype(np.uint8), 0.5)
    if not contours:
        return None
    contour = max(contours, key=len) - 1.0
    # find_contours works on pixel centres; QuPath outlines pixel edges, 0.5 px further out.
    contour = contour + np.asarray(top_left) + np.asarray(origin_px) + 0.5
    contour = measure.approximate_polygon(contour, tolerance=0.5)
    if len(contour) < 4:
        return None
    return _ring_xy(contour[:-1])


def write_geojson(path, features: list[dict]) -> Path:
    """Write a FeatureCollection atomically (creating the parent folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps({"type": "FeatureCollection", "features": features}))
