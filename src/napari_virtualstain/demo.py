"""The headless demo: every step the plugin offers, run on the bundled samples, written to a folder.

Pure (no napari/Qt), so it runs on servers and CI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_virtualstain.core.io import open_slide, write_ome_zarr
from napari_virtualstain.core.io.formatting import format_summary
from napari_virtualstain.core.samples import SAMPLES, sample_path

THUMBNAIL_MAX_SIDE_PX = 1024


def save_png(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path)
    return path


def thumbnail(slide, max_side_px: int = THUMBNAIL_MAX_SIDE_PX) -> np.ndarray:
    """The finest level that fits in ``max_side_px``, subsampled to fit exactly."""
    level = next(
        (i for i, lv in enumerate(slide.levels) if max(lv.shape[:2]) <= max_side_px),
        len(slide.levels) - 1,
    )
    arr = np.asarray(slide.levels[level].compute())
    step = max(1, int(np.ceil(max(arr.shape[:2]) / max_side_px)))
    return arr[::step, ::step]


def run_headless_demo(out: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Write, per sample: an OME-Zarr pyramid, a thumbnail PNG and a level summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summaries = {}
    for key in SAMPLES:
        start = time.perf_counter()
        slide = open_slide(sample_path(key))
        summary = slide.summary()
        summary["open_seconds"] = round(time.perf_counter() - start, 4)
        summaries[key] = summary
        log(format_summary(summary))
        zarr_path = write_ome_zarr(
            out / f"{slide.name}.ome.zarr",
            slide.levels[0],
            slide.mpp,
            name=slide.name,
            metadata={"source": str(slide.path), "magnification": slide.magnification},
            overwrite=True,
        )
        written.append(zarr_path)
        written.append(save_png(out / f"{slide.name}_thumbnail.png", thumbnail(slide)))
        log(f"  -> {zarr_path.name}, {slide.name}_thumbnail.png\n")
    summary_path = out / "slides.json"
    summary_path.write_text(json.dumps(summaries, indent=2))
    written.append(summary_path)
    return written
