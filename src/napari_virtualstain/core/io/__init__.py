"""Slides in and out: SVS, NDPI, OME-TIFF, TIFF, OME-Zarr and plain raster tiles.

Opening costs only metadata; pixels are read when a level (a dask array) is indexed.
"""

from __future__ import annotations

from pathlib import Path

from .errors import SlideReadError, SlideWriteError
from .icc import raster_icc_profile, tiff_icc_profile, to_srgb
from .omezarr import (
    PROVENANCE_KEY,
    is_zarr_group,
    open_ome_zarr,
    pyramid_level_count,
    write_ome_zarr,
)
from .openslide import OPENSLIDE_SUFFIXES, open_openslide
from .raster import RASTER_SUFFIXES, open_raster
from .slide import Slide
from .tiff import open_tiff

MIN_SIDE_PX = 8
TIFF_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff")
# OpenSlide formats need the optional extra; without it they fail with a message saying so.
SUPPORTED_SUFFIXES = (*TIFF_SUFFIXES, ".zarr", *RASTER_SUFFIXES, *OPENSLIDE_SUFFIXES)

__all__ = [
    "PROVENANCE_KEY",
    "SUPPORTED_SUFFIXES",
    "Slide",
    "SlideReadError",
    "SlideWriteError",
    "can_open",
    "open_slide",
    "pyramid_level_count",
    "write_ome_zarr",
]


def can_open(path: str | Path) -> bool:
    """Whether ``path`` looks like something ``open_slide`` reads (by suffix or zarr layout)."""
    path = Path(path)
    if path.is_dir():
        return is_zarr_group(path)
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def open_slide(path: str | Path) -> Slide:
    """Open a slide lazily. Raises ``SlideReadError`` naming the file for anything unreadable.

    An image narrower than ``MIN_SIDE_PX`` on either side is refused: it holds no tissue to
    measure or stain, and tiling, tissue masks and deconvolution are undefined on it.
    """
    slide = _open_any(Path(path).expanduser())
    h, w = slide.shape
    if min(h, w) < MIN_SIDE_PX:
        raise SlideReadError(
            slide.path, f"the image is {h} x {w} px; at least {MIN_SIDE_PX} px per side is needed"
        )
    return slide


def _open_any(path: Path) -> Slide:
    if not path.exists():
        raise SlideReadError(path, "no such file or directory")
    if path.is_dir():
        if not is_zarr_group(path):
            raise SlideReadError(
                path, "a directory that is not a zarr group (no .zgroup or zarr.json)"
            )
        return open_ome_zarr(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return to_srgb(open_tiff(path), tiff_icc_profile(path))  # no-op without a profile
    if suffix in OPENSLIDE_SUFFIXES:
        return open_openslide(path)
    if suffix in RASTER_SUFFIXES:
        return to_srgb(open_raster(path), raster_icc_profile(path))
    raise SlideReadError(
        path,
        f"unsupported format {suffix or '(no extension)'}; supported: {', '.join(SUPPORTED_SUFFIXES)}",
    )
