"""npe2 reader contribution: slides as lazy multiscale image layers.

``get_reader`` opens the slide's metadata (cheap: no pixels beyond one tile) and declines with
None when we cannot read it, so that napari offers the file to its other readers (a z-stack or
a fluorescence TIFF is not a slide) instead of showing our error.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from napari_virtualstain.core.io import SlideReadError, can_open, open_slide
from napari_virtualstain.core.io.ngff_labels import read_ngff_labels
from napari_virtualstain.core.io.openslide import OPENSLIDE_SUFFIXES, openslide_available

from .layers import labels_layer_data, slide_layer_data


def get_reader(path: str | list[str]):
    """Return a reader function when every path is a slide we can open, else None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(can_open(p) for p in paths):
        return None
    needs = sorted({Path(p).suffix.lower() for p in paths} & set(OPENSLIDE_SUFFIXES))
    if needs and not openslide_available():
        # Decline, but say why: napari shows warnings to the user.
        warnings.warn(
            f"{', '.join(needs)} slides need OpenSlide: "
            "pip install 'napari-virtualstain[openslide]'",
            stacklevel=2,
        )
        return None
    slides = []
    for p in paths:
        try:
            slides.append(open_slide(p))
        except SlideReadError:
            if not _labels(p):  # an OME-Zarr holding only label images is still ours
                return None
            slides.append(None)

    def read(_path=None) -> list[tuple]:
        layers = []
        for p, slide in zip(paths, slides, strict=True):
            if slide is not None:
                layers.append(slide_layer_data(slide))
            # An OME-Zarr's label images (ours: nuclei with their properties) come along.
            layers += [labels_layer_data(lab) for lab in _labels(p)]
        return layers

    return read


def _labels(path) -> list:
    try:
        return read_ngff_labels(path)
    except (KeyError, IndexError, TypeError, ValueError, OSError) as err:
        warnings.warn(f"{path}: its label images were not read ({err!r})", stacklevel=2)
        return []


def read_slides(path: str | list[str]) -> list[tuple]:
    """Open ``path`` (one or several slides) as layer data; raises ``SlideReadError``."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    return [slide_layer_data(open_slide(p)) for p in paths]
