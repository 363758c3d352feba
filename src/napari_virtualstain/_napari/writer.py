"""npe2 writer contributions: Labels -> NGFF labels, Shapes -> QuPath GeoJSON, Image -> OME-Zarr.

Each writer only unpacks napari's (data, meta) and calls one core function. Physical size comes
from the layer's ``units`` and ``scale`` (see :func:`.layers.layer_mpp`). Coordinates written
are the layer's data coordinates: the image's level-0 pixels when the layer shares its scale.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .layers import layer_mpp

LABEL_COLUMNS = ("index", "label", "id")


class LayerWriteError(OSError):
    """A layer could not be saved; the message names the destination and the reason."""


def _reported(writer):
    """npe2 takes a ValueError from a writer as "no writer for this file" and hides the reason;
    re-raise ours as an OSError so that napari shows it."""

    @functools.wraps(writer)
    def wrapped(path, data, meta):
        try:
            return writer(path, data, meta)
        except ValueError as err:
            raise LayerWriteError(str(err)) from err

    return wrapped


def _mpp(meta: dict) -> float | None:
    layer = SimpleNamespace(
        units=meta.get("units"), scale=meta.get("scale") or (1.0,), metadata=meta.get("metadata")
    )
    return layer_mpp(layer)


@_reported
def write_labels(path: str, data, meta: dict) -> list[str]:
    """A Labels layer as ``path/labels/<name>`` (NGFF image-label, with per-label properties)."""
    from napari_virtualstain.core.io.ngff_labels import write_ngff_labels

    level0 = data[0] if meta.get("multiscale") else data
    if np.ndim(level0) != 2:
        raise ValueError(
            f"{path}: only 2D labels can be saved as NGFF labels, got {np.shape(level0)}"
        )
    name = _safe_name(meta.get("name") or "labels")
    out = write_ngff_labels(
        path,
        level0,
        name,
        _mpp(meta),
        properties=label_properties(meta.get("features")),
        colors=_direct_colors(meta.get("colormap")),
        origin_px=_origin_px(meta),
    )
    return [str(out)]


def _origin_px(meta: dict) -> tuple[int, int]:
    """Where the layer's pixel (0, 0) lies in the image's pixels (its translate / its scale).

    Ki-67 nuclei labels cover only their ROIs' box and are placed with a translate.
    """
    scale = list(meta.get("scale") or (1.0, 1.0))[-2:]
    translate = list(meta.get("translate") or (0.0, 0.0))[-2:]
    return tuple(int(round(t / s)) for t, s in zip(translate, scale, strict=True))


def label_properties(features) -> list[dict]:
    """Rows of a Labels layer's ``features`` as NGFF properties, keyed by ``label-value``.

    The label value is the ``index`` column (napari's own convention), else ``label`` or ``id``,
    else the row number (napari's default: row n describes label n).
    """
    if features is None or len(features) == 0:
        return []
    key = next((c for c in LABEL_COLUMNS if c in features.columns), None)
    values = features[key].to_numpy() if key else np.arange(len(features))
    rows = features.drop(columns=[key]) if key else features
    out = []
    for value, row in zip(values.tolist(), rows.to_dict(orient="records"), strict=True):
        if int(value) != 0:
            out.append({"label-value": int(value), **row})
    return out


def _direct_colors(colormap) -> dict[int, tuple]:
    color_dict = getattr(colormap, "color_dict", None) or {}
    return {
        int(k): tuple(float(c) for c in v)
        for k, v in color_dict.items()
        if k is not None and int(k) != 0
    }


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_ ." else "_" for c in name).strip(" .") or "labels"


@_reported
def write_shapes(path: str, data, meta: dict) -> list[str]:
    """Polygons, rectangles and ellipses as QuPath annotations; lines and paths are skipped."""
    from napari_virtualstain.core.geojson import roi_features, write_geojson
    from napari_virtualstain.core.roi import ROI

    features = meta.get("features")
    names = (
        [str(v) for v in features["name"]]
        if features is not None and "name" in features.columns
        else []
    )
    rois, skipped = [], []
    origin = np.asarray(_origin_px(meta), dtype=float)
    for i, (kind, verts) in enumerate(zip(meta.get("shape_type", []), data, strict=True)):
        name = names[i] if i < len(names) else ""
        if kind not in ("polygon", "rectangle", "ellipse"):
            skipped.append(kind)
            continue
        # napari puts pixel centres on integers; QuPath's pixel i spans [i, i + 1).
        rois.append(ROI.from_pixels(kind, np.asarray(verts)[:, -2:] + origin + 0.5, 1.0, name))
    if skipped:
        warnings.warn(
            f"{path}: {len(skipped)} shape(s) ({', '.join(sorted(set(skipped)))}) have no area "
            "and were not written",
            stacklevel=2,
        )
    return [str(write_geojson(Path(path), roi_features(rois, 1.0)))]


@_reported
def write_image(path: str, data, meta: dict) -> list[str]:
    """An RGB uint8 Image layer as an OME-Zarr pyramid (its own levels, then built ones)."""
    from napari_virtualstain.core.io import write_ome_zarr

    levels = list(data) if meta.get("multiscale") else [data]
    metadata = dict(meta.get("metadata") or {})
    provenance = metadata.get("provenance") or {}
    out = write_ome_zarr(
        path, levels, _mpp(meta), name=meta.get("name") or "image", metadata=provenance
    )
    return [str(out)]


def write_image_with_labels(path: str, layer_data: list[tuple]) -> list[str]:
    """One RGB image and its label layers into one OME-Zarr: the image, then ``labels/<name>``."""
    images = [(d, m) for d, m, kind in layer_data if kind == "image"]
    if len(images) != 1:
        raise LayerWriteError(f"{path}: select exactly one image layer (got {len(images)})")
    written = write_image(path, *images[0])
    for data, meta, kind in layer_data:
        if kind == "labels":
            written += write_labels(path, data, meta)
    return written
