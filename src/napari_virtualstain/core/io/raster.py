"""Plain raster tiles (PNG, JPEG, BMP): one level, pixel size unknown unless given."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from .errors import SlideReadError
from .pixels import to_rgb8
from .slide import Slide

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def open_raster(path: Path) -> Slide:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "LA", "CMYK", "YCbCr"):
                img = img.convert("RGBA" if "A" in img.getbands() or img.mode == "P" else "RGB")
            arr = np.asarray(img)
    except Exception as exc:
        raise SlideReadError(path, f"not a readable image ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype == np.int32 or arr.dtype == np.int16:  # PIL "I" / "I;16" modes
        arr = arr.astype(np.uint16)
    rgb, notes = to_rgb8(
        da.from_array(arr, chunks=(1024, 1024, -1)),
        path,
        float(arr.max()) if arr.dtype == np.uint16 else None,
    )
    return Slide.from_file(path, [rgb], path.suffix.lower().lstrip("."), mpp=None, notes=notes)
