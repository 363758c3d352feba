"""Regions of interest in physical units (µm, level-0 (y, x)): polygons, rectangles, ellipses.

An ROI is stored in micrometres so that it means the same region at any pyramid level and on a
virtual stain of a different pixel size; pixels come in only through ``mpp`` when masking.
An ROI may have holes (QuPath's interior rings, e.g. necrosis left out): they are subtracted
from its mask and its area.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .geometry import Box

ROI_KINDS = ("polygon", "rectangle", "ellipse")
# Ellipses become polygons with this many vertices for GeoJSON and hit tests.
ELLIPSE_VERTICES = 72


@dataclass(frozen=True)
class ROI:
    """A named region in µm.

    Attributes
    ----------
    name : str
        Unique per slide (see :func:`name_rois`).
    kind : str
        "polygon", "rectangle" or "ellipse".
    params : tuple of (y, x) pairs, µm
        polygon: its vertices; rectangle: two opposite corners (axis-aligned);
        ellipse: its centre and its (y, x) radii.
    holes : tuple of rings of (y, x) pairs, µm
        Polygons cut out of the region: inside it, not overlapping one another.
    """

    name: str
    kind: str
    params: tuple[tuple[float, float], ...]
    holes: tuple[tuple[tuple[float, float], ...], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ROI_KINDS:
            raise ValueError(
                f"ROI {self.name!r}: kind must be one of {ROI_KINDS}, got {self.kind!r}"
            )
        pts = np.asarray(self.params, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
            raise ValueError(f"ROI {self.name!r}: expected finite (y, x) pairs, got {self.params}")
        need = 3 if self.kind == "polygon" else 2
        if len(pts) < need or (self.kind != "polygon" and len(pts) != 2):
            raise ValueError(
                f"ROI {self.name!r}: a {self.kind} needs {need} points, got {len(pts)}"
            )
        if self.holes:
            _check_holes(self)
        if not self.area_um2 > 1e-9:
            raise ValueError(f"ROI {self.name!r} is degenerate: its area is 0 µm²")

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def rectangle(cls, name: str, y_um: float, x_um: float, height_um: float, width_um: float):
        """An axis-aligned rectangle from its top-left corner and size."""
        return cls(name, "rectangle", ((y_um, x_um), (y_um + height_um, x_um + width_um)))

    @classmethod
    def ellipse(cls, name: str, cy_um: float, cx_um: float, ry_um: float, rx_um: float):
        """An axis-aligned ellipse from its centre and radii."""
        return cls(name, "ellipse", ((cy_um, cx_um), (abs(ry_um), abs(rx_um))))

    @classmethod
    def polygon(cls, name: str, vertices_um, holes_um=()) -> ROI:
        """A polygon from (y, x) vertices in µm, with optional hole rings (also (y, x) µm).

        A closing vertex equal to the first is dropped from each ring.
        """
        return cls(name, "polygon", _open_ring(vertices_um), tuple(map(_open_ring, holes_um)))

    @classmethod
    def from_pixels(cls, kind: str, points_px, mpp: float, name: str) -> ROI:
        """From napari-style shape vertices in level-0 pixels (y, x).

        Rectangles and ellipses arrive as the four corners of their box; rotated ones become
        polygons (an ellipse is sampled first).
        """
        _check_mpp(mpp)
        pts = np.asarray(points_px, dtype=float)[:, -2:] * mpp
        if kind in ("rectangle", "ellipse") and len(pts) == 4:
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            if _axis_aligned(pts):
                if kind == "rectangle":
                    return cls(name, "rectangle", (tuple(lo), tuple(hi)))
                return cls(name, "ellipse", (tuple((lo + hi) / 2), tuple((hi - lo) / 2)))
            if kind == "ellipse":
                return cls.polygon(name, _rotated_ellipse(pts))
        if kind in ("polygon", "rectangle"):
            return cls.polygon(name, pts)
        raise ValueError(f"ROI {name!r}: shapes of type {kind!r} cannot be ROIs")

    @classmethod
    def whole_image(cls, shape_px: tuple[int, int], mpp: float, name: str = "whole image"):
        """The rectangle covering the whole image."""
        _check_mpp(mpp)
        return cls(name, "rectangle", ((0.0, 0.0), (shape_px[0] * mpp, shape_px[1] * mpp)))

    # -- geometry ---------------------------------------------------------------------------
    @property
    def area_um2(self) -> float:
        """Area in µm², holes subtracted."""
        return self.outer_area_um2 - sum(_ring_area(np.asarray(h, float)) for h in self.holes)

    @property
    def outer_area_um2(self) -> float:
        """Area inside the outer boundary in µm², holes included."""
        pts = np.asarray(self.params, dtype=float)
        if self.kind == "rectangle":
            return float(abs(np.prod(pts[1] - pts[0])))
        if self.kind == "ellipse":
            return float(np.pi * abs(pts[1, 0] * pts[1, 1]))
        return _ring_area(pts)

    def holes_um(self) -> list[np.ndarray]:
        """Each hole's vertices (N, 2) in µm, (y, x), not closed."""
        return [np.asarray(h, dtype=float) for h in self.holes]

    def map_points(self, fn, name: str | None = None) -> ROI:
        """This ROI (outline and holes) through ``fn``, a map of (N, 2) µm (y, x) arrays.

        The result is a polygon (a rectangle or an ellipse is sampled first); for moving ROIs
        to another slide's frame without losing their holes.
        """
        holes = [fn(h) for h in self.holes_um()]
        return ROI.polygon(self.name if name is None else name, fn(self.polygon_um()), holes)

    def polygon_um(self, n_ellipse: int = ELLIPSE_VERTICES) -> np.ndarray:
        """Outer boundary vertices (N, 2) in µm, (y, x), not closed (holes: ``holes_um``)."""
        pts = np.asarray(self.params, dtype=float)
        if self.kind == "rectangle":
            (y0, x0), (y1, x1) = pts
            return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])
        if self.kind == "ellipse":
            t = np.linspace(0, 2 * np.pi, n_ellipse, endpoint=False)
            return np.stack(
                [pts[0, 0] + pts[1, 0] * np.sin(t), pts[0, 1] + pts[1, 1] * np.cos(t)], 1
            )
        return pts

    def bbox_um(self) -> tuple[float, float, float, float]:
        """(y0, x0, y1, x1) in µm."""
        poly = self.polygon_um()
        (y0, x0), (y1, x1) = poly.min(axis=0), poly.max(axis=0)
        return float(y0), float(x0), float(y1), float(x1)

    def bbox_px(self, mpp: float, shape_px: tuple[int, int] | None = None) -> Box:
        """The :class:`~.geometry.Box` of level-0 pixels the ROI touches, clipped to ``shape_px``.

        Raises ``ValueError`` when the ROI lies entirely outside the image.
        """
        _check_mpp(mpp)
        y0, x0, y1, x1 = self.bbox_um()
        box = Box.from_corners(
            int(np.floor(y0 / mpp)),
            int(np.floor(x0 / mpp)),
            int(np.ceil(y1 / mpp)),
            int(np.ceil(x1 / mpp)),
        )
        if shape_px is None:
            return box
        h, w = shape_px[:2]
        clipped = box.clip(shape_px)
        if clipped is None:
            raise ValueError(
                f"ROI {self.name!r} (µm box y {y0:.1f}-{y1:.1f}, x {x0:.1f}-{x1:.1f}) lies outside "
                f"the image ({h} x {w} px at {mpp} µm/px = {h * mpp:.1f} x {w * mpp:.1f} µm)"
            )
        return clipped

    def mask(self, mpp: float, origin_px: tuple[int, int], shape_px: tuple[int, int]) -> np.ndarray:
        """Boolean mask of the ROI over the pixel window starting at ``origin_px`` (level 0).

        A pixel is in when its centre is inside the outer boundary and not inside a hole.
        """
        _check_mpp(mpp)
        out = self._outer_mask(mpp, origin_px, shape_px)
        offset = np.array(origin_px, dtype=float) + 0.5  # pixel (i, j) spans [i, i + 1) µm/mpp
        for hole in self.holes_um():
            out &= ~_polygon_mask(hole / mpp - offset, shape_px)
        return out

    def _outer_mask(self, mpp: float, origin_px, shape_px) -> np.ndarray:
        from skimage import draw

        pts = np.asarray(self.params, dtype=float) / mpp
        oy, ox = origin_px
        if self.kind == "ellipse":
            # Pixel centres sit at +0.5; draw.ellipse works on integer centres.
            out = np.zeros(shape_px, bool)
            rr, cc = draw.ellipse(
                pts[0, 0] - oy - 0.5, pts[0, 1] - ox - 0.5, pts[1, 0], pts[1, 1], shape=shape_px
            )
            out[rr, cc] = True
            return out
        if self.kind == "rectangle":
            # Pixels whose centre lies inside the rectangle.
            (y0, x0), (y1, x1) = np.sort(pts, axis=0) - np.array([oy, ox])
            out = np.zeros(shape_px, bool)
            ys = slice(max(0, int(np.ceil(y0 - 0.5))), max(0, int(np.ceil(y1 - 0.5))))
            xs = slice(max(0, int(np.ceil(x0 - 0.5))), max(0, int(np.ceil(x1 - 0.5))))
            out[ys, xs] = True
            return out
        return _polygon_mask(self.polygon_um() / mpp - np.array([oy, ox]) - 0.5, shape_px)

    def to_dict(self) -> dict:
        """JSON-ready description (µm); ``holes_um`` only when the ROI has holes."""
        out = {"name": self.name, "kind": self.kind, "params_um": [list(p) for p in self.params]}
        if self.holes:
            out["holes_um"] = [[list(p) for p in h] for h in self.holes]
            out["area_um2"] = self.area_um2
        return out


def _open_ring(vertices) -> tuple[tuple[float, float], ...]:
    pts = np.asarray(vertices, dtype=float)
    if pts.ndim == 2 and len(pts) > 3 and np.allclose(pts[0], pts[-1]):
        pts = pts[:-1]
    return tuple(map(tuple, pts.tolist()))


def _ring_area(pts: np.ndarray) -> float:
    """Shoelace area of one ring of (y, x) vertices."""
    y, x = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def exclude(rois: list[ROI], exclusions: list[ROI]) -> list[ROI]:
    """``rois`` less the ``exclusions`` (necrosis, folds, artefacts drawn to be left out).

    Each ROI that an exclusion overlaps becomes a polygon whose holes (or cut outline) leave
    it out, so its nuclei and area are not counted; ROIs it does not touch stay as they are.
    An exclusion cutting an ROI in two, or covering it whole, is refused: the ratio of such an
    ROI is not what was drawn.
    """
    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    if not exclusions:
        return list(rois)
    cut = unary_union([Polygon(e.polygon_um()[:, ::-1]).buffer(0) for e in exclusions])
    out = []
    for roi in rois:
        poly = Polygon(roi.polygon_um()[:, ::-1], [h[:, ::-1] for h in roi.holes_um()])
        if not poly.intersects(cut):
            out.append(roi)
            continue
        rest = poly.difference(cut)
        if rest.is_empty:
            raise ValueError(f"ROI {roi.name!r} lies entirely inside the excluded regions")
        if rest.geom_type != "Polygon":
            parts = len(getattr(rest, "geoms", ()))
            raise ValueError(
                f"the excluded regions cut ROI {roi.name!r} into {parts} parts: draw each part "
                "as its own ROI"
            )
        outline = np.asarray(rest.exterior.coords)[:-1, ::-1]
        holes = [np.asarray(ring.coords)[:-1, ::-1] for ring in rest.interiors]
        out.append(ROI.polygon(roi.name, outline, holes))
    return out


def _check_holes(roi: ROI) -> None:
    """Holes must be rings inside the outline that do not overlap (else areas would be wrong)."""
    from shapely.geometry import Polygon

    outer = Polygon(roi.polygon_um()[:, ::-1])
    rings = []
    for i, hole in enumerate(roi.holes):
        pts = np.asarray(hole, dtype=float)
        if pts.ndim != 2 or pts.shape[1:] != (2,) or len(pts) < 3 or not np.isfinite(pts).all():
            raise ValueError(f"ROI {roi.name!r}: hole {i + 1} needs 3 finite (y, x) points")
        ring = Polygon(pts[:, ::-1])
        if not ring.is_valid or ring.area <= 0:
            raise ValueError(f"ROI {roi.name!r}: hole {i + 1} is not a simple polygon")
        rings.append(ring)
    if not outer.is_valid or not Polygon(outer.exterior, [r.exterior for r in rings]).is_valid:
        raise ValueError(
            f"ROI {roi.name!r}: its holes must lie inside its outline without overlapping"
        )


def _polygon_mask(poly_yx: np.ndarray, shape_px: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre is inside a polygon given in pixel-index coordinates (y, x).

    An even-odd scanline fill, exact at pixel centres (a centre on an edge counts as inside on
    the top and left edges only), so that an ROI and its holes tile the plane without a pixel
    counted twice or lost.
    """
    h, w = int(shape_px[0]), int(shape_px[1])
    pts = np.asarray(poly_yx, dtype=float)
    y0, x0 = pts[:, 0], pts[:, 1]
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    # rows r (centres at r) with lo <= r < hi: half-open, so a vertex is crossed once
    first = np.clip(np.ceil(lo), 0, h).astype(np.int64)
    last = np.clip(np.ceil(hi), 0, h).astype(np.int64)
    counts = last - first
    keep = counts > 0
    if not keep.any():
        return np.zeros((h, w), bool)
    edge = np.repeat(np.flatnonzero(keep), counts[keep])
    rows = np.arange(len(edge)) - np.repeat(np.cumsum(counts[keep]) - counts[keep], counts[keep])
    rows = rows + first[edge]
    t = (rows - y0[edge]) / (y1[edge] - y0[edge])
    cols = np.clip(np.ceil(x0[edge] + t * (x1[edge] - x0[edge])), 0, w).astype(np.int64)
    # Only the parity of the crossings left of a centre matters: uint8 wrapping keeps it.
    crossings = np.zeros((h, w + 1), np.uint8)
    np.add.at(crossings, (rows, cols), 1)
    inside = np.cumsum(crossings, axis=1, dtype=np.uint8)[:, :w] & 1
    return inside.astype(bool)


def _check_mpp(mpp) -> None:
    if mpp is None or not mpp > 0:
        raise ValueError(f"the pixel size (mpp, µm/px) must be known and > 0, got {mpp}")


def _axis_aligned(pts: np.ndarray) -> bool:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    tol = 1e-6 * max(1.0, float(np.abs(pts).max()))
    on_edge = (np.isclose(pts, lo, atol=tol) | np.isclose(pts, hi, atol=tol)).all(axis=1)
    return bool(on_edge.all())


def _rotated_ellipse(corners: np.ndarray, n: int = ELLIPSE_VERTICES) -> np.ndarray:
    """Sample the ellipse inscribed in a rotated box given by its four corners (in order)."""
    centre = corners.mean(axis=0)
    a = (corners[1] - corners[0]) / 2
    b = (corners[3] - corners[0]) / 2
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return centre + np.cos(t) * a + np.sin(t) * b


def name_rois(rois: list[ROI]) -> list[ROI]:
    """Give unnamed ROIs "ROI n" and make repeated names unique ("tumour (2)")."""
    seen: dict[str, int] = {}
    out = []
    for i, roi in enumerate(rois, start=1):
        name = roi.name.strip() or f"ROI {i}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name} ({seen[name]})"
        out.append(roi if name == roi.name else replace(roi, name=name))
    return out


def validate_rois(rois: list[ROI], shape_px: tuple[int, int], mpp: float) -> list[ROI]:
    """Named, checked ROIs: each must overlap the image (a clear ``ValueError`` otherwise)."""
    if not rois:
        raise ValueError("no ROI given")
    rois = name_rois(list(rois))
    for roi in rois:
        roi.bbox_px(mpp, shape_px)
    return rois
