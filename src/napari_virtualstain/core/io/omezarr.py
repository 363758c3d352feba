"""OME-Zarr (NGFF 0.4 and 0.5) slides: reading, and writing pyramids with dask."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from ..progress import OnProgress, Progress
from .errors import SlideReadError, SlideWriteError
from .guard import guarded_dask
from .ownership import check_replaceable, write_marker
from .pixels import move_channels_last, to_rgb8
from .slide import Slide, downsample2

PROVENANCE_KEY = "napari_virtualstain"
WRITE_CHUNK_PX = 512
TOP_LEVEL_MAX_SIDE_PX = 512
_UNIT_TO_UM = {
    "nanometer": 1e-3,
    "micrometer": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
}


def is_zarr_group(path: Path) -> bool:
    return (path / ".zgroup").exists() or (path / "zarr.json").exists()


def _multiscales(attrs: dict) -> list[dict] | None:
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:  # NGFF 0.5
        return ome["multiscales"]
    return attrs.get("multiscales")  # NGFF 0.4


def open_ome_zarr(path: Path) -> Slide:
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise SlideReadError(
            path, f"not a readable zarr group ({type(exc).__name__}: {exc})"
        ) from exc
    attrs = dict(group.attrs)
    multiscales = _multiscales(attrs)
    if not multiscales:
        raise SlideReadError(
            path, "zarr group has no NGFF 'multiscales' metadata (not an OME-Zarr image)"
        )
    ms, axes, axis_names, datasets = _check_multiscales(multiscales, path)
    levels = []
    try:
        guard = None
        yx = (axis_names.index("Y"), axis_names.index("X"))
        for ds in reversed(datasets):  # coarsest first: each level checks against the coarser
            arr, guard = guarded_dask(group[ds["path"]], path, datasets.index(ds), guard, yx)
            levels.insert(0, move_channels_last(arr, axis_names, path))
    except SlideReadError:
        raise
    except Exception as exc:
        raise SlideReadError(path, f"corrupt OME-Zarr level ({type(exc).__name__}: {exc})") from exc
    converted = []
    notes = ""
    for lv in levels:
        rgb, notes = to_rgb8(lv, path, _uint16_peak(levels) if lv.dtype == np.uint16 else None)
        converted.append(rgb)
    mpp = _checked_mpp(ms, axes, path)
    magnification = attrs.get(PROVENANCE_KEY, {}).get("magnification")
    return Slide.from_file(path, converted, "ome-zarr", mpp=mpp, magnification=magnification,
                           notes=notes)  # fmt: skip


def _check_multiscales(multiscales, path) -> tuple[dict, list, str, list]:
    """Validate the NGFF metadata's shape before use; every failure names the file."""
    if not isinstance(multiscales, list) or not isinstance(multiscales[0], dict):
        raise SlideReadError(
            path, f"'multiscales' must be a list of objects, found {type(multiscales).__name__}"
        )
    ms = multiscales[0]
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise SlideReadError(path, "'multiscales' lists no 'datasets' (no pyramid levels)")
    for i, ds in enumerate(datasets):
        if not isinstance(ds, dict) or not isinstance(ds.get("path"), str):
            raise SlideReadError(path, f"multiscales dataset {i} has no 'path' string")
    axes = ms.get("axes") or [{"name": n} for n in "tczyx"]
    try:
        axis_names = "".join((a["name"] if isinstance(a, dict) else a)[0].upper() for a in axes)
    except (KeyError, TypeError, IndexError) as exc:
        raise SlideReadError(path, f"malformed 'axes' in multiscales: {axes!r}"[:300]) from exc
    if "Y" not in axis_names or "X" not in axis_names:
        raise SlideReadError(path, f"multiscales axes {axis_names!r} have no y and x")
    return ms, axes, axis_names, datasets


def _checked_mpp(ms: dict, axes: list, path) -> float | None:
    try:
        return _ngff_mpp(ms, axes)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError) as exc:
        raise SlideReadError(path, f"malformed coordinateTransformations ({exc})") from exc


def _uint16_peak(levels: list[da.Array]) -> float:
    return float(np.percentile(np.asarray(levels[-1].compute()), 99.9))


def _ngff_mpp(ms: dict, axes: list) -> float | None:
    names = [(a["name"] if isinstance(a, dict) else a).lower() for a in axes]
    if "x" not in names:
        return None
    x_axis = names.index("x")
    unit = axes[x_axis].get("unit") if isinstance(axes[x_axis], dict) else None
    factor = _UNIT_TO_UM.get(unit or "")
    if factor is None:
        return None  # no physical unit: pixel size unknown, never assumed
    scale = 1.0
    for tr in ms.get("coordinateTransformations", []):
        if tr.get("type") == "scale":
            scale *= tr["scale"][x_axis]
    for tr in ms["datasets"][0].get("coordinateTransformations", []):
        if tr.get("type") == "scale":
            scale *= tr["scale"][x_axis]
    return scale * factor if scale > 0 else None


def pyramid_level_count(
    shape_yx: Sequence[int], top_max_side_px: int = TOP_LEVEL_MAX_SIDE_PX
) -> int:
    """Levels needed so that the coarsest one fits in ``top_max_side_px`` (halving each time)."""
    side = max(shape_yx)
    return 1 + max(0, math.ceil(math.log2(side / top_max_side_px))) if side > top_max_side_px else 1


def write_ome_zarr(
    path: str | Path,
    image: da.Array | np.ndarray | Sequence[da.Array | np.ndarray],
    mpp: float | None,
    name: str = "image",
    metadata: dict | None = None,
    n_levels: int | None = None,
    progress: OnProgress | None = None,
    overwrite: bool = False,
    chunk_px: int = WRITE_CHUNK_PX,
    marker: dict | None = None,
) -> Path:
    """Write (y, x, 3) uint8 RGB as an NGFF 0.4 multiscale image (axes c, y, x) with dask.

    Level k+1 is downsampled from level k *as written*, so an expensive upstream graph (a virtual
    stain) is computed exactly once. ``metadata`` (provenance) is stored in the group attributes
    under ``"napari_virtualstain"``. ``progress`` gets a ``core.progress.Progress`` of chunks
    written (of all levels) as chunks land.
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise SlideWriteError(
                path, "already exists (use --overwrite, or overwrite=True in Python, to replace it)"
            )
        check_replaceable(path)  # never deletes a folder holding anything but an image
        shutil.rmtree(path)
    given = list(image) if isinstance(image, list | tuple) else [image]
    base = da.asarray(given[0])
    if base.ndim != 3 or base.shape[-1] != 3 or base.dtype != np.uint8:
        raise SlideWriteError(path, f"expected (y, x, 3) uint8 RGB, got {base.shape} {base.dtype}")
    if n_levels is None:
        n_levels = pyramid_level_count(base.shape[:2])
    if mpp is not None and not (mpp > 0):
        raise SlideWriteError(path, f"mpp must be positive, got {mpp}")

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_marker(path, "writing", **(marker or {}))
    total = _chunk_total(base.shape[:2], n_levels, chunk_px)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(Progress(done[0], total, "writing OME-Zarr chunks"))

    level = base
    downsamples = []
    for k in range(n_levels):
        if k > 0:
            prev = da.from_zarr(group[str(k - 1)]).transpose(1, 2, 0)
            level = da.asarray(given[k]) if k < len(given) else downsample2(prev)
        _write_level(group, str(k), level, chunk_px, advance)
        # Built levels halve exactly (odd edges trimmed); given levels keep their own ratio.
        exact = 2.0**k if k >= len(given) or k == 0 else base.shape[1] / level.shape[1]
        downsamples.append(exact)

    attrs = {
        "multiscales": [_multiscales_attrs(name, downsamples, mpp)],
        "omero": _omero_attrs(name),
    }
    attrs[PROVENANCE_KEY] = json.loads(json.dumps(metadata or {}, default=str))
    group.attrs.update(attrs)
    write_marker(path, "complete", **(marker or {}))
    return path


def _chunk_total(shape_yx: Sequence[int], n_levels: int, chunk_px: int) -> int:
    total, (h, w) = 0, shape_yx
    for _ in range(n_levels):
        total += math.ceil(h / chunk_px) * math.ceil(w / chunk_px)
        h, w = h // 2, w // 2
    return total


def _write_level(
    group, key: str, level: da.Array, chunk_px: int, advance: Callable[[int], None]
) -> None:
    level = level.rechunk((chunk_px, chunk_px, 3))
    target = group.create_array(
        key,
        shape=(3, *level.shape[:2]),
        chunks=(3, chunk_px, chunk_px),
        dtype=np.uint8,
        fill_value=255,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    # Write band by band of chunk rows so progress is reported and memory stays bounded.
    n_rows = math.ceil(level.shape[0] / chunk_px)
    n_cols = math.ceil(level.shape[1] / chunk_px)
    for row in range(n_rows):
        y0, y1 = row * chunk_px, min((row + 1) * chunk_px, level.shape[0])
        band = level[y0:y1].transpose(2, 0, 1)
        da.store(band, target, regions=(slice(None), slice(y0, y1), slice(None)), lock=False)
        advance(n_cols)


def _multiscales_attrs(name: str, downsamples: list[float], mpp: float | None) -> dict:
    unit = {"unit": "micrometer"} if mpp is not None else {}
    pixel = mpp if mpp is not None else 1.0
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, d * pixel, d * pixel]}],
        }
        for k, d in enumerate(downsamples)
    ]
    return {
        "version": "0.4",
        "name": name,
        "axes": [
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", **unit},
            {"name": "x", "type": "space", **unit},
        ],
        "datasets": datasets,
        "type": "mean",
    }


def _omero_attrs(name: str) -> dict:
    colours = ("FF0000", "00FF00", "0000FF")
    return {
        "name": name,
        "version": "0.4",
        "rdefs": {"model": "color"},
        "channels": [
            {
                "label": lab,
                "color": c,
                "active": True,
                "window": {"start": 0, "end": 255, "min": 0, "max": 255},
            }
            for lab, c in zip(("R", "G", "B"), colours, strict=True)
        ],
    }
