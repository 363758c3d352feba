"""Colour management: pixels of a slide that carries an ICC profile, converted to sRGB.

A scanner's ICC profile describes its measured colour. Models (and screens) expect sRGB, so a
profiled slide is converted on reading, lazily, block by block. A profile that is already sRGB
is left alone. The transform is built from the profile's bytes in each process (ImageCms
transforms do not pickle), so the same graph runs on dask workers.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from pathlib import Path

import dask.array as da
import numpy as np

from .slide import Slide

ICC_TAG = 34675  # TIFF InterColorProfile


def profile_description(profile: bytes) -> str:
    """The profile's description ("sRGB IEC61966-2.1", "Aperio ...")."""
    from PIL import ImageCms

    prof = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return (ImageCms.getProfileDescription(prof) or "").strip()


def is_srgb(profile: bytes) -> bool:
    return profile_description(profile).lower().startswith("srgb")


@functools.lru_cache(maxsize=8)
def _transform(profile: bytes):
    from PIL import ImageCms

    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    target = ImageCms.createProfile("sRGB")
    return ImageCms.buildTransform(
        source, target, "RGB", "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL
    )


def rgb_to_srgb(rgb: np.ndarray, profile: bytes) -> np.ndarray:
    """(h, w, 3) uint8 pixels in ``profile``'s colour space, as sRGB."""
    from PIL import Image, ImageCms

    if rgb.size == 0:
        return rgb
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    return np.asarray(ImageCms.applyTransform(img, _transform(profile)))


def tiff_icc_profile(path: str | Path) -> bytes | None:
    """The ICC profile of a TIFF's first page (InterColorProfile tag), if it has one."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(ICC_TAG) if tif.pages else None
            return bytes(tag.value) if tag is not None else None
    except Exception:  # noqa: BLE001 - unreadable files are reported by the slide reader
        return None


def raster_icc_profile(path: str | Path) -> bytes | None:
    """The ICC profile embedded in a PNG / JPEG / BMP, if any (read from the header only)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            profile = img.info.get("icc_profile")
    except Exception:  # noqa: BLE001 - unreadable files are reported by the slide reader
        return None
    return bytes(profile) if profile else None


def to_srgb(slide: Slide, profile: bytes | None) -> Slide:
    """``slide`` with every level converted from ``profile`` to sRGB (lazily).

    Returns ``slide`` unchanged when there is no profile or it is sRGB already.
    """
    if not profile:
        return slide
    try:
        description = profile_description(profile)
        _transform(profile)
    except Exception as exc:  # noqa: BLE001 - a corrupt profile must not hide the pixels
        note = f"ICC profile unreadable ({type(exc).__name__}); colours not converted"
        return dataclasses.replace(slide, notes=_join(slide.notes, note))
    if description.lower().startswith("srgb"):
        return slide
    levels = [
        da.map_blocks(rgb_to_srgb, lv, profile, dtype=np.uint8, name=False) for lv in slide.levels
    ]
    note = f"ICC profile {description!r} converted to sRGB"
    return dataclasses.replace(slide, levels=levels, notes=_join(slide.notes, note))


def _join(notes: str, note: str) -> str:
    return f"{notes}; {note}" if notes else note
