"""QuPath-compatible GeoJSON: ROIs as annotations, nuclei as classified detections.

QuPath writes coordinates as [x, y] in level-0 pixels. It has used three layouts, all read here:
a bare JSON list of features (0.2), features with ``"id": "PathAnnotationObject"``, and a
``FeatureCollection`` with ``properties.objectType`` (0.3+). Measurements are a list of
``{"name", "value"}`` (up to 0.3) or a dict (0.4+). Cells carry their nucleus as
``nucleusGeometry``. We write the 0.4 layout, which QuPath 0.3+ imports.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .ki67 import Ki67Result, Nuclei
from .roi import ROI, name_rois

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


@dataclass(frozen=True)
class Detection:
    """A detection read from GeoJSON: outline (y, x) in level-0 pixels, class, measurements."""

    polygon_px: np.ndarray
    classification: str | None
    measurements: dict = field(default_factory=dict)
    name: str = ""

    @property
    def centroid_px(self) -> tuple[float, float]:
        """Area centroid (y, x) of the outline, in QuPath's continuous pixel coordinates.

        Pixel (i, j) spans [i, i + 1); napari and our tables put its centre at (i, j), so
        subtract 0.5 to compare with them.
        """
        y, x = self.polygon_px[:, 0], self.polygon_px[:, 1]
        yn, xn = np.roll(y, -1), np.roll(x, -1)
        cross = x * yn - xn * y
        area = cross.sum() / 2
        if abs(area) < 1e-12:
            return float(y.mean()), float(x.mean())
        return float(((y + yn) * cross).sum() / (6 * area)), float(
            ((x + xn) * cross).sum() / (6 * area)
        )


@dataclass(frozen=True)
class GeoJSONObjects:
    """What a GeoJSON file held: annotation ROIs and detections."""

    rois: list[ROI]
    detections: list[Detection]


def _ring_xy(poly_yx_px: np.ndarray) -> list[list[float]]:
    ring = [[round(float(x), 2), round(float(y), 2)] for y, x in poly_yx_px]
    return ring + [ring[0]]


def _feature(ring, object_type: str, name: str, cls: str | None, measurements: dict) -> dict:
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
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": props,
    }


def roi_features(rois: list[ROI], mpp: float, results: list[Ki67Result] | None = None):
    """ROIs as QuPath annotations (ellipses become polygons); results become measurements."""
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
        feats.append(_feature(_ring_xy(roi.polygon_um() / mpp), "annotation", roi.name, None, m))
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
        feats.append(_feature(ring, "detection", "", cls, meas))
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
    """Write a FeatureCollection; refuses nothing but creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def read_geojson(source, mpp: float) -> GeoJSONObjects:
    """Read annotations (as µm ROIs) and detections from a QuPath (or plain) GeoJSON file.

    ``source`` is a path or already-parsed JSON. Features without ``objectType`` are taken as
    annotations; MultiPolygons give one ROI per part; points and lines are skipped.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read GeoJSON from {path}: {err}") from err
    else:
        data = source
    rois, detections = [], []
    for feat in _features(data):
        props = feat.get("properties") or {}
        kind = _object_type(feat, props)
        geometry = props.get("nucleusGeometry") if kind == "cell" else feat.get("geometry")
        for poly in _polygons(geometry):
            if kind == "annotation":
                name = props.get("name") or _class_name(props) or ""
                rois.append(ROI.polygon(name, poly * mpp))
            else:
                m = _measurements(props.get("measurements"))
                detections.append(Detection(poly, _class_name(props), m, props.get("name", "")))
    return GeoJSONObjects(name_rois(rois) if rois else [], detections)


def _features(data) -> list[dict]:
    if isinstance(data, list):
        return data
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError("not GeoJSON: expected a FeatureCollection, a Feature or a list of them")
    if data["type"] == "FeatureCollection":
        return list(data.get("features", []))
    if data["type"] == "Feature":
        return [data]
    return [{"type": "Feature", "geometry": data, "properties": {}}]


def _object_type(feat: dict, props: dict) -> str:
    kind = props.get("objectType") or {
        "PathAnnotationObject": "annotation",
        "PathDetectionObject": "detection",
        "PathCellObject": "cell",
    }.get(str(feat.get("id", "")), "annotation")
    return "detection" if kind == "tile" else kind


def _polygons(geometry) -> list[np.ndarray]:
    """Outer rings of a Polygon / MultiPolygon as (N, 2) (y, x) arrays, unclosed."""
    if not geometry:
        return []
    if geometry.get("type") == "Polygon":
        rings = [geometry["coordinates"][0]]
    elif geometry.get("type") == "MultiPolygon":
        rings = [p[0] for p in geometry["coordinates"]]
    else:
        return []
    out = []
    for ring in rings:
        xy = np.asarray(ring, dtype=float)[:, :2]
        if len(xy) > 1 and np.allclose(xy[0], xy[-1]):
            xy = xy[:-1]
        if len(xy) >= 3:
            out.append(xy[:, ::-1])
    return out


def _class_name(props: dict) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict):
        return cls.get("name")
    return cls if isinstance(cls, str) else None


def _measurements(raw) -> dict:
    if isinstance(raw, dict):
        return dict(raw)
    if isinstance(raw, list):
        return {m["name"]: m.get("value") for m in raw if isinstance(m, dict) and "name" in m}
    return {}
