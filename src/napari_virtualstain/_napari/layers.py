"""Turn core objects into napari layer data tuples. The only place that knows napari's layout."""

from __future__ import annotations

from napari_virtualstain.core.io import Slide


def slide_layer_data(slide: Slide, name: str | None = None) -> tuple:
    """A multiscale RGB image layer tuple with physical scale (µm) when mpp is known."""
    known = slide.mpp is not None
    scale = (slide.mpp, slide.mpp) if known else (1.0, 1.0)
    layer_name = name or (slide.name if known else f"{slide.name} (mpp unknown)")
    meta = {
        "slide_path": str(slide.path),
        "mpp": slide.mpp,
        "magnification": slide.magnification,
        "format": slide.format,
        "notes": slide.notes,
        "units": "µm" if known else "pixels",
    }
    kwargs = {
        "name": layer_name,
        "rgb": True,
        "multiscale": len(slide.levels) > 1,
        "scale": scale,
        "contrast_limits": [0, 255],
        "metadata": meta,
    }
    data = slide.levels if len(slide.levels) > 1 else slide.levels[0]
    return (data, kwargs, "image")
