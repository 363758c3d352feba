"""Small real slides for tests, cut from the bundled samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from . import PACKAGE_DATA

DATA = PACKAGE_DATA


def write_slide(path: Path, mpp: float | None = 0.25) -> Path:
    he = tifffile.imread(DATA / "OS-1-detail_HE.ome.tif")
    rgb = np.full((256, 320, 3), 248, np.uint8)
    rgb[:192, :192] = he[:192, :192]  # tissue in one corner, glass elsewhere
    meta = {"axes": "YXS"}
    if mpp is not None:
        meta |= {"PhysicalSizeX": mpp, "PhysicalSizeY": mpp}
    tifffile.imwrite(path, rgb, ome=True, tile=(64, 64), photometric="rgb", metadata=meta)
    return path
