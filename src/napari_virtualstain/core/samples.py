"""The real sample slides bundled with the package (see data/SOURCES.md for provenance)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SAMPLES = {
    "he": "OS-1-detail_HE.ome.tif",
    "ki67": "OS-2-ndpi_Ki67.ome.tif",
    "cmu1": "cmu-1-small-region.svs",
}


def sample_path(key: str) -> Path:
    """Path of a bundled sample: "he" (OS-1 H&E), "ki67" (OS-2 Ki-67), "cmu1" (CMU-1 H&E)."""
    if key not in SAMPLES:
        raise KeyError(f"unknown sample {key!r}; choose from {sorted(SAMPLES)}")
    return Path(str(files("napari_virtualstain") / "data" / SAMPLES[key]))
