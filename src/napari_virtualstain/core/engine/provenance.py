"""Provenance: what produced a virtual stain, recorded with every layer and written file."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def package_versions() -> dict[str, str]:
    """Versions of this package and of the libraries that shape the pixels."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("napari-virtualstain", "torch", "numpy", "dask", "zarr", "tifffile"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def slide_identity(slide) -> str:
    """A short hash naming a slide's pixels: file path, size and mtime, or sampled pixels.

    A file-backed slide is identified by its resolved path, byte size, modification time and
    level-0 shape (reading no pixels). An in-memory image (no file) is identified by its shape
    and the bytes of its coarsest level.
    """
    h = hashlib.sha256()
    h.update(repr(tuple(slide.levels[0].shape)).encode())
    path = Path(str(slide.path)) if slide.path is not None else None
    if path is not None and path.exists():
        st = os.stat(path)
        h.update(str(path.resolve()).encode())
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        coarse = np.ascontiguousarray(np.asarray(slide.levels[-1]))
        h.update(coarse.tobytes())
    return h.hexdigest()[:16]


def build_provenance(
    *,
    card,
    plan,
    device: str,
    precision: str,
    precision_reason: str = "",
    slide=None,
    extra: dict | None = None,
) -> dict:
    """The JSON-ready record of one virtual stain.

    Parameters
    ----------
    card : ModelCard
        The generator's card (name, sha256, direction, mpp, tile size).
    plan : StainPlan
        Level, mpp, tile / halo / blend, resampling, normalisation statistics, preview flag.
    device, precision : str
        Where and how the generator ran.
    precision_reason : str
        Why this precision ("set by the user", or what ``auto`` measured on this machine).
    slide : Slide, optional
        The source slide (path, name, identity).
    """
    record = {
        "software": "napari-virtualstain",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": card.name,
            "arch": card.arch,
            "sha256": card.sha256,
            "direction": card.direction,
            "mpp": card.mpp,
            "tile_px": card.tile_px,
        },
        "plan": plan.to_dict(),
        "device": str(device),
        "precision": precision,
        "precision_reason": precision_reason,
        "versions": package_versions(),
    }
    if slide is not None:
        record["source"] = {
            "path": str(slide.path),
            "name": slide.name,
            "mpp": slide.mpp,
            "shape_px": list(slide.levels[0].shape[:2]),
            "identity": slide_identity(slide),
        }
    if extra:
        record.update(extra)
    json.dumps(record)  # fail here, not in a writer, if something is not serialisable
    return record
