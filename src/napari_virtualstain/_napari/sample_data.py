"""npe2 sample-data contributions: real, redistributable slides bundled with the package."""

from __future__ import annotations

from napari_virtualstain.core.io import open_slide
from napari_virtualstain.core.samples import sample_path

from .layers import slide_layer_data


def sample_he() -> list[tuple]:
    return [slide_layer_data(open_slide(sample_path("he")))]


def sample_ki67() -> list[tuple]:
    return [slide_layer_data(open_slide(sample_path("ki67")))]


def sample_cmu1() -> list[tuple]:
    return [slide_layer_data(open_slide(sample_path("cmu1")))]
