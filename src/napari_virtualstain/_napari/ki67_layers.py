"""Ki-67 results as napari layer data: nuclei labels coloured by class, centroids, ROIs.

Nuclei go in a Labels layer (napari's Shapes slow down past ~10k objects), keeping one id per
nucleus so that a click can find and flip it; the class colours come from a direct colormap.
The nuclei Labels and the centroid Points carry a ``features`` table (label, roi, area_um2,
dab_od_mean, class, flipped), so napari's table / plot plugins and ``layer.features.to_csv``
work unchanged. Every layer made here carries its ``mpp`` and physical ``units``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_virtualstain.core.ki67.run import RatioRun
from napari_virtualstain.core.roi import ROI, name_rois

from .layers import UNIT

POSITIVE_RGBA = (0.95, 0.1, 0.1, 1.0)
NEGATIVE_RGBA = (0.1, 0.45, 1.0, 1.0)
TRANSPARENT = (0.0, 0.0, 0.0, 0.0)
NUCLEUS_MARKER_UM = 6.0


def nuclei_colormap(run: RatioRun):
    """A direct label colormap: positive nuclei red, negative blue, background transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    colors = {None: TRANSPARENT, 0: TRANSPARENT}
    for m in run.measurements:
        for label, pos in zip(m.nuclei.label.tolist(), m.nuclei.positive.tolist(), strict=True):
            # A nucleus in two overlapping ROIs keeps its first ROI's id (see labels_union).
            colors.setdefault(int(label), POSITIVE_RGBA if pos else NEGATIVE_RGBA)
    return DirectLabelColormap(color_dict=colors)


def _placement(origin_px, image_scale, image_translate, units=None) -> dict:
    scale = tuple(float(s) for s in image_scale[-2:])
    translate = tuple(
        float(t) + o * s for t, o, s in zip(image_translate[-2:], origin_px, scale, strict=True)
    )
    return {"scale": scale, "translate": translate, "units": _units(units)}


def _units(units) -> tuple[str, str]:
    """The image layer's physical units (µm by default: our scales are µm when mpp is known)."""
    if units is None:
        return (UNIT, UNIT)
    return tuple(str(u) for u in tuple(units)[-2:])


def nuclei_features(run: RatioRun) -> dict[str, np.ndarray]:
    """One row per nucleus of the run: label, roi, area_um2, dab_od_mean, class, flipped.

    A nucleus in two overlapping ROIs keeps its first ROI's row (as in ``labels_union``).
    """
    parts = {k: [] for k in ("label", "roi", "area_um2", "dab_od_mean", "class", "flipped")}
    for m in run.measurements:
        n = m.nuclei
        names = m.config.class_names
        cls = _classes(m)
        parts["label"].append(n.label.astype(np.int64))
        parts["roi"].append(np.full(len(n), m.roi.name, dtype=object))
        parts["area_um2"].append(n.area_um2)
        parts["dab_od_mean"].append(n.dab_od_mean)
        parts["class"].append(np.asarray(names, dtype=object)[cls])
        parts["flipped"].append(n.flipped)
    cols = {
        k: np.concatenate(v) if v else np.zeros(0, object if k in ("roi", "class") else float)
        for k, v in parts.items()
    }
    _, first = np.unique(cols["label"], return_index=True)
    first.sort()
    return {k: v[first] for k, v in cols.items()}


def warm_labels_texture(label_image: np.ndarray, colormap) -> None:
    """Compile napari's label-to-texture mapping for this dtype now, in the worker.

    napari compiles it (numba) the first time a Labels layer of a dtype is drawn in a process:
    measured at 1.0-1.25 s on the GUI thread when the Ki-67 run's layer was added. Mapping a
    2x2 corner, and building the texture's colour table as the vispy layer then does, pays
    that once, off the GUI thread. Best effort: a napari without the
    private hook only loses the head start. The compiling is Python (llvmlite): the worker
    runs it with short GIL slices (``_qt.background.in_background``), so it does not hold the
    GUI thread for 5 ms at a time.
    """
    try:
        texture = colormap._data_to_texture(np.ascontiguousarray(label_image[:2, :2]))
        colormap._get_mapping_from_cache(texture.dtype)  # what the vispy layer asks for next
    except Exception:  # noqa: BLE001 - a warm-up; the layer works without it
        pass


def nuclei_labels_layer_data(
    run: RatioRun, image_scale, image_translate, name: str, units=None
) -> tuple:
    """(labels, kwargs, "labels") over the ROIs' joint box, placed on the image layer.

    The features table has a row for the background (label 0) first, as napari expects
    for Labels; nuclei follow in label order.
    """
    labels, origin = run.labels_union()
    feats = nuclei_features(run)
    order = np.argsort(feats["label"], kind="stable")
    table = {k: np.concatenate([[_background(k)], v[order]]) for k, v in feats.items()}
    table = {"index": table["label"], **table}  # napari maps label values to rows by "index"
    kwargs = {
        "name": name,
        "colormap": nuclei_colormap(run),
        "opacity": 0.55,
        "features": table,
        "metadata": {"origin_px": origin, "mpp": run.mpp, "provenance": run.provenance},
        **_placement(origin, image_scale, image_translate, units),
    }
    return labels, kwargs, "labels"


def _background(column: str):
    return {"label": 0, "roi": "", "class": "background", "flipped": False}.get(column, np.nan)


def centroid_points_layer_data(
    run: RatioRun, image_scale, image_translate, name: str, units=None
) -> tuple:
    """(points, kwargs, "points"): nucleus centroids in image pixels, coloured by class."""
    ys = np.concatenate([m.nuclei.y for m in run.measurements] + [np.zeros(0)])
    xs = np.concatenate([m.nuclei.x for m in run.measurements] + [np.zeros(0)])
    pos = np.concatenate([m.nuclei.positive for m in run.measurements] + [np.zeros(0, bool)])
    colors = np.where(pos[:, None], POSITIVE_RGBA, NEGATIVE_RGBA).reshape(-1, 4)
    table = {
        k: np.concatenate([getattr(m.nuclei, a) for m in run.measurements] + [np.zeros(0)])
        for k, a in (("label", "label"), ("area_um2", "area_um2"), ("dab_od_mean", "dab_od_mean"))
    }
    table["roi"] = np.concatenate(
        [np.full(len(m.nuclei), m.roi.name, dtype=object) for m in run.measurements]
        + [np.zeros(0, object)]
    )
    table["class"] = np.concatenate(
        [np.asarray(m.config.class_names, dtype=object)[_classes(m)] for m in run.measurements]
        + [np.zeros(0, object)]
    )
    table["flipped"] = np.concatenate(
        [m.nuclei.flipped for m in run.measurements] + [np.zeros(0, bool)]
    )
    table["label"] = table["label"].astype(np.int64)
    kwargs = {
        "name": name,
        "face_color": colors,
        "border_width": 0,
        "size": NUCLEUS_MARKER_UM / run.mpp,
        "opacity": 0.8,
        "features": table,
        "metadata": {"mpp": run.mpp},
        **_placement((0, 0), image_scale, image_translate, units),
    }
    return np.stack([ys, xs], axis=1), kwargs, "points"


def _classes(m) -> np.ndarray:
    n, names = m.nuclei, m.config.class_names
    if len(names) > 2:
        return np.where(n.positive, n.intensity_class.clip(1, len(names) - 1), 0)
    return n.positive.astype(int)


def rois_from_shapes(shapes_layer, image_layer, mpp: float) -> list[ROI]:
    """The shapes of a Shapes layer as µm ROIs in the image layer's level-0 pixels.

    Names come from a "name" feature column when the layer has one, else "ROI n".
    """
    names = _shape_names(shapes_layer)
    rois = []
    for i, (kind, verts) in enumerate(zip(shapes_layer.shape_type, shapes_layer.data, strict=True)):
        world = np.array([shapes_layer.data_to_world(v) for v in np.asarray(verts)])
        # napari puts pixel centres on integers; ROIs put pixel i over [i, i + 1).
        px = np.array([image_layer.world_to_data(w) for w in world])[:, -2:] + 0.5
        rois.append(ROI.from_pixels(kind, px, mpp, names[i] if i < len(names) else ""))
    return name_rois(rois)


def world_outlines(rois: list[ROI] | None, image_layer, mpp: float) -> dict[str, np.ndarray]:
    """ROI name -> its outline in napari world coordinates (the whole image when ``rois`` is
    None): the frame in which two layers of a registered pair can be compared."""
    if rois is None:
        shape = image_layer.data[0].shape if image_layer.multiscale else image_layer.data.shape
        rois = [ROI.whole_image(tuple(shape[:2]), mpp)]
    out = {}
    for roi in rois:
        px = roi.polygon_um() / mpp - 0.5
        out[roi.name] = np.array([image_layer.data_to_world(p)[-2:] for p in px])
    return out


def _shape_names(shapes_layer) -> list[str]:
    features = getattr(shapes_layer, "features", None)
    if features is not None and "name" in getattr(features, "columns", ()):
        return [str(v) for v in features["name"]]
    return []


def roi_shapes_layer_data(
    rois: list[ROI], mpp: float, image_scale, image_translate, name: str, units=None
):
    """(polygons, kwargs, "shapes") to show ROIs (e.g. read from GeoJSON or a hot spot)."""
    data = [roi.polygon_um() / mpp - 0.5 for roi in rois]
    kwargs = {
        "name": name,
        "shape_type": "polygon",
        "edge_color": "yellow",
        "face_color": "transparent",
        "edge_width": 4.0,
        "features": {"name": [r.name for r in rois]},
        "metadata": {"mpp": mpp},
        **_placement((0, 0), image_scale, image_translate, units),
    }
    return data, kwargs, "shapes"


@dataclass(frozen=True)
class Ki67Layers:
    """A run and everything its layers need, prepared off the GUI thread."""

    run: RatioRun
    labels: tuple | None  # (data, kwargs, "labels"), None when the ROIs are too large
    points: tuple | None
    histograms: list
    note: str = ""


def iter_ki67_layers(
    image, mpp: float, rois, *, scale, translate, units, name: str, points: bool, **kwargs
):
    """``iter_measure_rois``, then the layer data and histograms: the widget's worker job.

    Everything heavy (the union label image, the colormap, the feature tables) is built here,
    in the worker thread, so that the GUI only adds layers.
    """
    from napari_virtualstain.core.ki67 import dab_histograms
    from napari_virtualstain.core.ki67.pipeline import iter_measure_rois
    from napari_virtualstain.core.progress import Progress

    run = yield from iter_measure_rois(image, mpp, rois, **kwargs)
    yield Progress(1, 1, "preparing layers")
    labels, note = None, ""
    try:
        labels = nuclei_labels_layer_data(run, scale, translate, f"Nuclei ({name})", units)
    except ValueError as err:  # ROIs too large for a label image: results only
        note = f"No nuclei layer: {err}."
    if labels is not None:
        warm_labels_texture(labels[0], labels[1]["colormap"])
    pts = None
    if points:
        pts = centroid_points_layer_data(run, scale, translate, f"Centroids ({name})", units)
    return Ki67Layers(run, labels, pts, dab_histograms(run), note)
