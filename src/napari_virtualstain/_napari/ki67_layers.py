"""Ki-67 results as napari layer data: nuclei labels coloured by class, centroids, ROIs.

Nuclei go in a Labels layer (napari's Shapes slow down past ~10k objects), keeping one id per
nucleus so that a click can find and flip it; the class colours come from a direct colormap.
"""

from __future__ import annotations

import numpy as np

from napari_virtualstain.core.ki67.pipeline import RatioRun
from napari_virtualstain.core.roi import ROI

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


def _placement(origin_px, image_scale, image_translate) -> dict:
    scale = tuple(float(s) for s in image_scale[-2:])
    translate = tuple(
        float(t) + o * s for t, o, s in zip(image_translate[-2:], origin_px, scale, strict=True)
    )
    return {"scale": scale, "translate": translate}


def nuclei_labels_layer_data(run: RatioRun, image_scale, image_translate, name: str) -> tuple:
    """(labels, kwargs, "labels") over the ROIs' joint box, placed on the image layer."""
    labels, origin = run.labels_union()
    kwargs = {
        "name": name,
        "colormap": nuclei_colormap(run),
        "opacity": 0.55,
        "metadata": {"origin_px": origin, "mpp": run.mpp, "provenance": run.provenance},
        **_placement(origin, image_scale, image_translate),
    }
    return labels, kwargs, "labels"


def centroid_points_layer_data(run: RatioRun, image_scale, image_translate, name: str) -> tuple:
    """(points, kwargs, "points"): nucleus centroids in image pixels, coloured by class."""
    ys = np.concatenate([m.nuclei.y for m in run.measurements] + [np.zeros(0)])
    xs = np.concatenate([m.nuclei.x for m in run.measurements] + [np.zeros(0)])
    pos = np.concatenate([m.nuclei.positive for m in run.measurements] + [np.zeros(0, bool)])
    colors = np.where(pos[:, None], POSITIVE_RGBA, NEGATIVE_RGBA).reshape(-1, 4)
    kwargs = {
        "name": name,
        "face_color": colors,
        "border_width": 0,
        "size": NUCLEUS_MARKER_UM / run.mpp,
        "opacity": 0.8,
        **_placement((0, 0), image_scale, image_translate),
    }
    return np.stack([ys, xs], axis=1), kwargs, "points"


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
    return rois


def _shape_names(shapes_layer) -> list[str]:
    features = getattr(shapes_layer, "features", None)
    if features is not None and "name" in getattr(features, "columns", ()):
        return [str(v) for v in features["name"]]
    return []


def roi_shapes_layer_data(rois: list[ROI], mpp: float, image_scale, image_translate, name: str):
    """(polygons, kwargs, "shapes") to show ROIs (e.g. read from GeoJSON or a hot spot)."""
    data = [roi.polygon_um() / mpp - 0.5 for roi in rois]
    kwargs = {
        "name": name,
        "shape_type": "polygon",
        "edge_color": "yellow",
        "face_color": "transparent",
        "edge_width": 4.0,
        "features": {"name": [r.name for r in rois]},
        **_placement((0, 0), image_scale, image_translate),
    }
    return data, kwargs, "shapes"
