"""NGFF (0.4) image-label groups: a labels image under ``<image>.zarr/labels/<name>``.

Label images are pyramids downsampled by taking every other pixel (never averaged: a label id is
a name, not a quantity). Inside an image, they have its levels, shapes and scales (the spec asks
for as many levels as the image); on their own, they halve until the top fits 1024 px. Per-label ``properties`` (positivity, DAB OD, area...) and ``colors`` go
in the ``image-label`` metadata, as the spec describes, so that OME-Zarr viewers show them.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from .errors import SlideWriteError
from .omezarr import is_zarr_group, pyramid_level_count

LABEL_CHUNK_PX = 1024
NGFF_VERSION = "0.4"


def write_ngff_labels(
    path: str | Path,
    labels,
    name: str,
    mpp: float | None,
    properties: Sequence[Mapping] | None = None,
    colors: Mapping[int, Sequence[float]] | None = None,
    n_levels: int | None = None,
    origin_px: tuple[int, int] = (0, 0),
) -> Path:
    """Write a (y, x) integer labels image as ``path/labels/<name>`` (NGFF image-label).

    ``origin_px`` is where the labels' top-left pixel lies in the image (a Ki-67 run labels only
    the box of its ROIs): inside an image they are placed there on a full-size label image; in a
    store of their own the offset is an NGFF ``translation``.

    ``path`` is an OME-Zarr image (the labels join its ``labels`` group) or a new folder (a
    group holding only labels is made). A label of the same name is replaced as a whole, after
    the new one is complete; anything else in the store is left alone. ``properties`` are dicts
    with a ``"label-value"`` key; ``colors`` map label values to RGBA in 0..1.
    """
    path = Path(path)
    if path.exists() and not (path.is_dir() and is_zarr_group(path)):
        raise SlideWriteError(path, "exists and is not a zarr group; refusing to write into it")
    if not name or "/" in name or name.startswith("."):
        raise SlideWriteError(path, f"bad label name {name!r}")
    if mpp is not None and not (mpp > 0):
        raise SlideWriteError(path, f"mpp must be positive, got {mpp}")
    data = da.asarray(labels)
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer):
        raise SlideWriteError(
            path, f"expected (y, x) integer labels, got {data.shape} {data.dtype}"
        )
    if np.issubdtype(data.dtype, np.signedinteger):
        data = data.astype(np.uint32 if data.dtype.itemsize <= 4 else np.uint64)
    parent = _parent_levels(path)
    if parent is not None:
        # The spec: as many levels as the image, on its grid (our own pyramids halve exactly).
        shapes, scales, unit = parent
        data = _placed(path, data, origin_px, shapes[0])
        translation = None
    else:
        n = n_levels or pyramid_level_count(data.shape, top_max_side_px=LABEL_CHUNK_PX)
        shapes = [tuple(-(-d // 2**k) for d in data.shape) for k in range(n)]
        pixel = mpp if mpp is not None else 1.0
        scales = [[pixel * 2**k, pixel * 2**k] for k in range(n)]
        unit = "micrometer" if mpp is not None else None
        translation = [o * pixel for o in origin_px] if any(origin_px) else None

    root = zarr.open_group(str(path), mode="a", zarr_format=2)
    group = root.require_group("labels")
    tmp_name = f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp = group.create_group(tmp_name)
    try:
        for k, (h, w) in enumerate(shapes):
            step = max(1, round(data.shape[0] / h))
            level = data[::step, ::step][:h, :w].rechunk(LABEL_CHUNK_PX)
            target = tmp.create_array(
                str(k),
                shape=level.shape,
                chunks=(LABEL_CHUNK_PX, LABEL_CHUNK_PX),
                dtype=level.dtype,
                fill_value=0,
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
            da.store(level, target, lock=False)
        tmp.attrs.update(_label_attrs(name, scales, translation, unit, properties, colors))
    except BaseException:
        shutil.rmtree(path / "labels" / tmp_name, ignore_errors=True)
        raise
    _swap_in(path / "labels", tmp_name, name)
    names = [n for n in group.attrs.get("labels", []) if n != name] + [name]
    group.attrs["labels"] = names
    return path / "labels" / name


def _placed(path: Path, data: da.Array, origin_px, image_shape) -> da.Array:
    """``data`` padded with background to the image's level-0 size, its top-left at ``origin_px``."""
    (oy, ox), (h, w), (big_h, big_w) = origin_px, data.shape, image_shape
    if oy < 0 or ox < 0 or oy + h > big_h or ox + w > big_w:
        raise SlideWriteError(
            path, f"labels of {h} x {w} px at (y={oy}, x={ox}) do not fit in the image there "
            f"({big_h} x {big_w} px)"
        )  # fmt: skip
    if (oy, ox, h, w) == (0, 0, big_h, big_w):
        return data
    return da.pad(data, ((oy, big_h - oy - h), (ox, big_w - ox - w)), constant_values=0)


def _swap_in(folder: Path, tmp_name: str, name: str) -> None:
    final, old = folder / name, folder / f".{name}.old-{uuid.uuid4().hex[:8]}"
    if final.exists():
        final.rename(old)
    (folder / tmp_name).rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _parent_levels(path: Path):
    """(level shapes, level scales, x unit) of the OME-Zarr image at ``path`` (y, x), or None."""
    if not (path.is_dir() and is_zarr_group(path)):
        return None
    root = zarr.open_group(str(path), mode="r")
    multiscales = dict(root.attrs).get("multiscales")
    if not multiscales:
        return None
    shapes, scales = [], []
    for ds in multiscales[0]["datasets"]:
        shapes.append(tuple(root[ds["path"]].shape[-2:]))
        scale = next(
            (t["scale"] for t in ds.get("coordinateTransformations", []) if t["type"] == "scale"),
            [1.0, 1.0],
        )
        scales.append([float(v) for v in scale[-2:]])
    x_axis = multiscales[0].get("axes", [{}])[-1]
    return shapes, scales, x_axis.get("unit") if isinstance(x_axis, dict) else None


def _label_attrs(name, scales, translation, unit, properties, colors) -> dict:
    unit = {"unit": unit} if unit else {}
    image_label: dict = {"version": NGFF_VERSION, "source": {"image": "../../"}}
    if colors:
        image_label["colors"] = [
            {"label-value": int(v), "rgba": [int(round(255 * c)) for c in rgba]}
            for v, rgba in sorted(colors.items())
        ]
    if properties:
        image_label["properties"] = [_json_ready(p) for p in properties]
    return {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": name,
                "axes": [
                    {"name": "y", "type": "space", **unit},
                    {"name": "x", "type": "space", **unit},
                ],
                "datasets": [
                    {
                        "path": str(k),
                        "coordinateTransformations": [{"type": "scale", "scale": scale}]
                        + (
                            [{"type": "translation", "translation": translation}]
                            if translation
                            else []
                        ),
                    }
                    for k, scale in enumerate(scales)
                ],
                "type": "nearest",
            }
        ],
        "image-label": image_label,
    }


def _json_ready(row: Mapping) -> dict:
    out = {}
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[str(key)] = value
    return json.loads(json.dumps(out, default=str))


def read_label_properties(path: str | Path, name: str) -> list[dict]:
    """The ``image-label`` properties stored for label image ``name`` (for tests and tools)."""
    group = zarr.open_group(str(Path(path) / "labels" / name), mode="r")
    return list(dict(group.attrs).get("image-label", {}).get("properties", []))


@dataclass(frozen=True)
class LabelImage:
    """A label image read from ``<image>.zarr/labels/<name>``.

    ``levels`` are lazy (y, x) integer dask arrays; ``mpp`` is level 0's µm per pixel (None when
    the axes carry no length unit); ``properties`` map label value -> its properties.
    """

    name: str
    levels: list
    mpp: float | None
    properties: dict = field(default_factory=dict)
    colors: dict = field(default_factory=dict)
    translate_um: tuple[float, float] = (0.0, 0.0)


def read_ngff_labels(path: str | Path) -> list[LabelImage]:
    """Every label image listed in ``path/labels`` (an empty list when there is none)."""
    from .omezarr import _UNIT_TO_UM

    folder = Path(path) / "labels"
    if not (folder.is_dir() and is_zarr_group(folder)):
        return []
    names = dict(zarr.open_group(str(folder), mode="r").attrs).get("labels", [])
    out = []
    for name in names:
        group = zarr.open_group(str(folder / name), mode="r")
        attrs = dict(group.attrs)
        ms = attrs["multiscales"][0]
        levels = [da.from_zarr(group[ds["path"]]) for ds in ms["datasets"]]
        transforms = ms["datasets"][0].get("coordinateTransformations", [])
        scale = next((t["scale"] for t in transforms if t["type"] == "scale"), [1.0, 1.0])
        shift = next((t["translation"] for t in transforms if t["type"] == "translation"), [0, 0])
        unit = (ms.get("axes") or [{}])[-1].get("unit")
        factor = _UNIT_TO_UM.get(unit or "")
        meta = attrs.get("image-label", {})
        out.append(
            LabelImage(
                name=name,
                levels=levels,
                mpp=None if factor is None else float(scale[-1]) * factor,
                properties={p["label-value"]: p for p in meta.get("properties", [])},
                colors={c["label-value"]: c["rgba"] for c in meta.get("colors", [])},
                translate_um=tuple(float(t) * (factor or 1.0) for t in shift[-2:]),
            )
        )
    return out
