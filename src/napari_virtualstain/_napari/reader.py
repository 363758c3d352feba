"""npe2 reader contribution: slides as lazy multiscale image layers."""

from __future__ import annotations

from pathlib import Path

from napari_virtualstain.core.io import can_open, open_slide

from .layers import slide_layer_data


def get_reader(path: str | list[str]):
    """Return a reader function when every path looks like a slide, else None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(can_open(p) for p in paths):
        return None
    return read_slides


def read_slides(path: str | list[str]) -> list[tuple]:
    paths = [path] if isinstance(path, str | Path) else list(path)
    return [slide_layer_data(open_slide(p)) for p in paths]
