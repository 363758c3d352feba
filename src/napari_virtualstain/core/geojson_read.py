"""Reading QuPath GeoJSON (see :mod:`.geojson` for the layouts): ROIs and detections.

Geometry goes through shapely: invalid outlines are made valid, areas subtract holes. An
annotation's holes (interior rings) become its ROI's holes: left out of its mask and its area.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from shapely import make_valid
from shapely.geometry import MultiPolygon, Polygon
from shapely.ops import unary_union

from .roi import ROI, name_rois

ANNOTATION_TYPES = ("annotation", "tma_core")
DETECTION_TYPES = ("detection", "cell", "tile")
LEGACY_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "TMACoreObject": "tma_core",
    "PathRootObject": "root",
}


@dataclass(frozen=True)
class Detection:
    """A detection read from GeoJSON.

    Attributes
    ----------
    polygon_px : (N, 2) array
        Outline (y, x) in level-0 pixels (a cell's nucleus; the largest part of a multi-part one).
    classification : str or None
        The class name ("Positive", "Tumor: Positive" for a derived class).
    measurements : dict
        QuPath's measurements by name.
    object_type : str
        "detection", "cell" or "tile".
    area_px : float
        Area in level-0 pixels² (all parts, holes subtracted).
    parent : str
        The name (or class) of the object this one was nested in via ``childObjects``.
    """

    polygon_px: np.ndarray = field(compare=False)
    classification: str | None
    measurements: dict = field(default_factory=dict)
    name: str = ""
    object_type: str = "detection"
    area_px: float = float("nan")
    parent: str = ""
    geometry: object = field(default=None, compare=False, repr=False)

    @property
    def centroid_px(self) -> tuple[float, float]:
        """Area centroid (y, x), in QuPath's continuous pixel coordinates.

        Pixel (i, j) spans [i, i + 1); napari and our tables put its centre at (i, j), so
        subtract 0.5 to compare with them.
        """
        if self.geometry is not None:
            c = self.geometry.centroid
            return float(c.y), float(c.x)
        y, x = self.polygon_px[:, 0], self.polygon_px[:, 1]
        return float(y.mean()), float(x.mean())


@dataclass(frozen=True)
class GeoJSONObjects:
    """What a GeoJSON file held: annotation ROIs, detections, and what could not be kept."""

    rois: list[ROI]
    detections: list[Detection]
    notes: list[str] = field(default_factory=list)


def read_geojson(source, mpp: float) -> GeoJSONObjects:
    """Read annotations (as µm ROIs) and detections from a QuPath (or plain) GeoJSON file.

    ``source`` is a path or already-parsed JSON. Features without an object type are annotations
    (as in QuPath); an annotation's holes are kept as its ROI's holes; MultiPolygons give one ROI
    per part; points and lines are skipped. ``notes`` says what was skipped, split or cut out,
    for the caller to show. Raises ``ValueError`` naming the file and the feature for malformed
    input.
    """
    if not (mpp > 0):
        raise ValueError(f"mpp must be positive, got {mpp}")
    where = ""
    if isinstance(source, (str, Path)):
        path = Path(source)
        where = f"{path}: "
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read GeoJSON from {path}: {err}") from err
    else:
        data = source
    reader = _Reader(mpp)
    try:
        for i, feat in enumerate(_features(data)):
            reader.read(feat, f"feature {i}", parent="")
    except ValueError as err:
        raise ValueError(f"{where}{err}") from err
    rois = name_rois(reader.rois) if reader.rois else []
    return GeoJSONObjects(rois, reader.detections, reader.notes())


class _Reader:
    """Walks features (and their ``childObjects``), collecting ROIs and detections."""

    def __init__(self, mpp: float) -> None:
        self.mpp = mpp
        self.rois: list[ROI] = []
        self.detections: list[Detection] = []
        self.skipped: dict[str, int] = {}
        self.roi_notes: list[str] = []

    def read(self, feat, where: str, parent: str) -> None:
        if not isinstance(feat, dict):
            raise ValueError(f"{where} is a {type(feat).__name__}, not a GeoJSON Feature object")
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            raise ValueError(f"{where}: 'properties' must be an object")
        kind = _object_type(feat, props)
        name = props.get("name") if isinstance(props.get("name"), str) else ""
        cls = _class_name(props.get("classification"))
        if kind in ANNOTATION_TYPES:
            self._annotation(feat.get("geometry"), name or cls or "", where)
        elif kind in DETECTION_TYPES:
            self._detection(feat, props, kind, name, cls, parent, where)
        children = feat.get("childObjects", props.get("childObjects")) or []
        if not isinstance(children, list):
            raise ValueError(f"{where}: 'childObjects' must be a list of features")
        for j, child in enumerate(children):
            self.read(child, f"{where} child {j}", parent=name or cls or parent)

    def _annotation(self, geometry, name: str, where: str) -> None:
        geom = _geometry(geometry, where)
        if geom is None:
            self._skip(geometry)
            return
        parts = _parts(geom)
        label = name or where
        if len(parts) > 1:
            self.roi_notes.append(
                f"annotation {label!r} has {len(parts)} separate parts; each is measured as "
                "its own ROI"
            )
        for part in parts:
            outer = np.asarray(part.exterior.coords)[:-1, ::-1] * self.mpp
            holes = [np.asarray(r.coords)[:-1, ::-1] * self.mpp for r in part.interiors]
            if holes:
                hole_um2 = sum(Polygon(r).area for r in part.interiors) * self.mpp**2
                self.roi_notes.append(
                    f"annotation {label!r}: {len(holes)} hole(s) ({hole_um2:.0f} µm²) left out "
                    "of its ROI"
                )
            self.rois.append(ROI.polygon(name, outer, holes))

    def _detection(self, feat, props, kind, name, cls, parent, where) -> None:
        # QuPath writes a cell's nucleus beside its geometry, at Feature level; some tools put it
        # in properties. A cell without a nucleus is read by its whole outline.
        nucleus = feat.get("nucleusGeometry", props.get("nucleusGeometry"))
        source = nucleus if kind == "cell" and nucleus else feat.get("geometry")
        geom = _geometry(source, where)
        if geom is None:
            self._skip(source)
            return
        largest = max(_parts(geom), key=lambda p: p.area)
        self.detections.append(
            Detection(
                polygon_px=np.asarray(largest.exterior.coords)[:-1, ::-1],
                classification=cls,
                measurements=_measurements(props.get("measurements")),
                name=name,
                object_type=kind,
                area_px=float(geom.area),
                parent=parent,
                geometry=geom,
            )
        )

    def _skip(self, geometry) -> None:
        kind = geometry.get("type", "no geometry") if isinstance(geometry, dict) else "no geometry"
        self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def notes(self) -> list[str]:
        skipped = [
            f"skipped {n} feature(s) with {kind}" for kind, n in sorted(self.skipped.items())
        ]
        return skipped + self.roi_notes


def _features(data) -> list:
    if isinstance(data, list):
        return data
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError(
            "not GeoJSON: expected a FeatureCollection, a Feature, a geometry or a list of "
            f"features, got {type(data).__name__}"
            + (" without 'type'" if isinstance(data, dict) else "")
        )
    if data["type"] == "FeatureCollection":
        feats = data.get("features", [])
        if not isinstance(feats, list):
            raise ValueError("not GeoJSON: 'features' of a FeatureCollection must be a list")
        return feats
    if data["type"] == "Feature":
        return [data]
    return [{"type": "Feature", "geometry": data, "properties": {}}]


def _object_type(feat: dict, props: dict) -> str:
    # 0.4+: objectType; 0.3: object_type (or its alias "type"); 0.2: the class name in "id".
    kind = props.get("objectType") or props.get("object_type") or props.get("type")
    if not isinstance(kind, str):
        kind = LEGACY_IDS.get(str(feat.get("id", "")), "annotation")
    kind = LEGACY_IDS.get(kind, kind).lower()
    return kind if kind in (*ANNOTATION_TYPES, *DETECTION_TYPES, "root") else "annotation"


def _ring(raw, where: str) -> np.ndarray:
    """One ring as an (N, 2) float (x, y) array, or a ValueError saying what is wrong."""
    if not isinstance(raw, list) or not all(isinstance(p, list | tuple) for p in raw):
        raise ValueError(f"{where}: a ring must be a list of [x, y] positions")
    if any(len(p) < 2 for p in raw):
        raise ValueError(f"{where}: ragged coordinates (a position with fewer than 2 numbers)")
    for p in raw:
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in p[:2]):
            raise ValueError(f"{where}: coordinates must be numbers, got {list(p)!r}")
    xy = np.array([[p[0], p[1]] for p in raw], dtype=float)
    if not np.all(np.isfinite(xy)):
        raise ValueError(f"{where}: coordinates must be finite")
    return xy


def _geometry(geometry, where: str):
    """A valid shapely (Multi)Polygon in (x, y) pixels, or None for other or empty geometry."""
    if not geometry:
        return None
    if not isinstance(geometry, dict):
        raise ValueError(f"{where}: geometry must be an object, got {type(geometry).__name__}")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind not in ("Polygon", "MultiPolygon"):
        return None
    if not isinstance(coords, list):
        raise ValueError(f"{where}: {kind} coordinates must be a list")
    polys = [coords] if kind == "Polygon" else coords
    parts = []
    for poly in polys:
        if not isinstance(poly, list) or not poly:
            raise ValueError(f"{where}: each polygon must be a non-empty list of rings")
        rings = [_ring(r, where) for r in poly]
        if len(rings[0]) >= 3:
            parts.append(Polygon(rings[0], [r for r in rings[1:] if len(r) >= 3]))
    if not parts:
        return None
    geom = MultiPolygon(parts) if len(parts) > 1 else parts[0]
    if not geom.is_valid:
        # Self-intersections (a QuPath brush stroke, a bow tie) become their valid parts.
        geom = unary_union(_parts(make_valid(geom)))
    return None if geom.is_empty or geom.area <= 0 else geom


def _parts(geom) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [geom] if geom.area > 0 else []
    return [p for g in getattr(geom, "geoms", []) for p in _parts(g)]


def _class_name(cls) -> str | None:
    if isinstance(cls, str):
        return cls or None
    if isinstance(cls, dict):
        if isinstance(cls.get("name"), str):
            return cls["name"]
        names = cls.get("names")  # derived classes, e.g. ["Tumor", "Positive"]
        if isinstance(names, list) and names:
            return ": ".join(str(n) for n in names)
    return None


def _measurements(raw) -> dict:
    if isinstance(raw, dict):
        return dict(raw)
    if isinstance(raw, list):
        return {m["name"]: m.get("value") for m in raw if isinstance(m, dict) and "name" in m}
    return {}
