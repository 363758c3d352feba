"""SVS, NDPI, OME-TIFF and generic (pyramidal) TIFF through tifffile's zarr store."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import zarr

from .errors import SlideReadError
from .guard import guarded_dask
from .pixels import move_channels_last, to_rgb8
from .slide import Slide

ASSOCIATED_NAMES = ("label", "macro", "thumbnail", "overview", "map")
# A generic TIFF's resolution is trusted only when it is plausibly a scanner's (not 72/96 dpi).
MAX_PLAUSIBLE_MPP = 50.0


def open_tiff(path: Path) -> Slide:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises several types for corrupt files
        raise SlideReadError(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    try:
        return _slide_from_tiff(tif, path)
    finally:
        tif.close()


def _slide_from_tiff(tif, path: Path) -> Slide:
    import tifffile

    if not tif.series:
        raise SlideReadError(path, "the TIFF holds no image series")
    main_index = _main_series_index(tif)
    series = tif.series[main_index]
    _check_not_truncated(tif, series, path)
    levels_raw = []
    try:
        store = tifffile.imread(path, aszarr=True, series=main_index)
        node = zarr.open(store, mode="r")
        arrays = (
            [node]
            if isinstance(node, zarr.Array)
            else [node[str(i)] for i in range(len(series.levels))]
        )
        for i, (arr, lv) in enumerate(zip(arrays, series.levels, strict=True)):
            yx = (
                (lv.axes.index("Y"), lv.axes.index("X"))
                if "Y" in lv.axes and "X" in lv.axes
                else (0, 1)
            )
            guarded, _ = guarded_dask(arr, path, i, None, yx)  # corrupt tiles name the file
            levels_raw.append(move_channels_last(guarded, lv.axes, path))
        # Touch the first tile so a truncated file fails here, naming the file, not later in napari.
        levels_raw[-1][:1, :1].compute()
    except SlideReadError:
        raise
    except Exception as exc:
        raise SlideReadError(
            path, f"corrupt or truncated image data ({type(exc).__name__}: {exc})"
        ) from exc

    intensity_max = None
    if levels_raw[0].dtype == np.uint16:
        intensity_max = float(np.percentile(np.asarray(levels_raw[-1][::4, ::4].compute()), 99.9))
    levels, notes = [], ""
    for lv in levels_raw:
        rgb, notes = to_rgb8(lv, path, intensity_max)
        levels.append(rgb)
    fmt = "svs" if tif.is_svs else "ndpi" if tif.is_ndpi else "ome-tiff" if tif.is_ome else "tiff"
    mpp, magnification = _physical_metadata(tif, fmt)
    associated = _associated_images(tif, main_index, path)
    return Slide.from_file(path, levels, fmt, mpp=mpp, magnification=magnification,
                           associated=associated, notes=notes)  # fmt: skip


def _check_not_truncated(tif, series, path: Path) -> None:
    """Every tile of every level must lie inside the file (a cheap metadata-only check)."""
    size = tif.filehandle.size
    for level in series.levels:
        for page in level.pages:
            if page is None:
                continue
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
            if ends and max(ends) > size:
                raise SlideReadError(
                    path,
                    f"truncated: image data ends at byte {max(ends)} but the file has {size} bytes",
                )


def _main_series_index(tif) -> int:
    """The largest series that is not an associated image."""
    candidates = [
        (int(np.prod(s.shape)), i)
        for i, s in enumerate(tif.series)
        if (s.name or "").lower() not in ASSOCIATED_NAMES
    ]
    if not candidates:
        candidates = [(int(np.prod(s.shape)), i) for i, s in enumerate(tif.series)]
    return max(candidates)[1]


class LazyAssociated(Mapping):
    """Associated images (label, macro, thumbnail), decoded on first access, not on open."""

    def __init__(self, path: Path, series_by_name: dict[str, int]) -> None:
        self._path = path
        self._series = series_by_name
        self._decoded: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._decoded:
            import tifffile

            img = tifffile.imread(self._path, series=self._series[key])
            if img.ndim == 2:
                img = np.stack([img] * 3, axis=-1)
            self._decoded[key] = np.ascontiguousarray(img[..., :3])
        return self._decoded[key]

    def __iter__(self):
        return iter(self._series)

    def __len__(self) -> int:
        return len(self._series)


def _associated_images(tif, main_index: int, path: Path) -> LazyAssociated:
    series_by_name = {}
    for i, s in enumerate(tif.series):
        name = (s.name or "").lower()
        is_rgb8 = s.dtype == np.uint8 and (len(s.shape) == 2 or s.shape[-1] in (3, 4))
        if i != main_index and name in ASSOCIATED_NAMES and is_rgb8:
            series_by_name[name] = i
    return LazyAssociated(path, series_by_name)


def _physical_metadata(tif, fmt: str) -> tuple[float | None, float | None]:
    page = tif.pages[0]
    if fmt == "svs":
        return _svs_metadata(page.description)
    if fmt == "ome-tiff":
        mpp = _ome_mpp(tif.ome_metadata)
        if mpp is not None:
            return mpp, _ome_magnification(tif.ome_metadata)
    magnification = None
    if fmt == "ndpi":
        magnification = page.ndpi_tags.get("Magnification") if page.ndpi_tags else None
    return _resolution_tag_mpp(page, trust_any_unit=fmt in ("ndpi", "ome-tiff")), magnification


def _svs_metadata(description: str) -> tuple[float | None, float | None]:
    mpp = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description)
    mag = re.search(r"\|\s*AppMag\s*=\s*([0-9.]+)", description)
    return (float(mpp.group(1)) if mpp else None, float(mag.group(1)) if mag else None)


_UNIT_TO_UM = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


def _ome_pixels_attrs(ome_xml: str | None) -> dict:
    if not ome_xml:
        return {}
    match = re.search(r"<(?:\w+:)?Pixels\b([^>]*)>", ome_xml)
    if not match:
        return {}
    return dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))


def _ome_mpp(ome_xml: str | None) -> float | None:
    attrs = _ome_pixels_attrs(ome_xml)
    size = attrs.get("PhysicalSizeX")
    if size is None:
        return None
    unit = attrs.get("PhysicalSizeXUnit", "µm")
    factor = _UNIT_TO_UM.get(unit)
    if factor is None:
        return None
    mpp = float(size) * factor
    return mpp if mpp > 0 else None


def _ome_magnification(ome_xml: str | None) -> float | None:
    match = re.search(r'NominalMagnification="([0-9.]+)"', ome_xml or "")
    return float(match.group(1)) if match else None


def _resolution_tag_mpp(page, trust_any_unit: bool) -> float | None:
    tags = page.tags
    if "XResolution" not in tags:
        return None
    num, den = tags["XResolution"].value
    if not num or not den:
        return None
    pixels_per_unit = num / den
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    um_per_unit = {2: 25400.0, 3: 10000.0}.get(unit)
    if um_per_unit is None:
        return None
    mpp = um_per_unit / pixels_per_unit
    if not trust_any_unit and not (0 < mpp <= MAX_PLAUSIBLE_MPP):
        return None  # e.g. 72 dpi written by an image editor, not a physical pixel size
    return mpp
