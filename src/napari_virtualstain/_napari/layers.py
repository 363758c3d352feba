"""Turn core objects into napari layer data tuples, and read physical pixel size back from layers.

The only place that knows how napari spells physical units: layers get ``scale`` in µm *and*
``units`` ("micrometer"), so other plugins (and napari's scale bar) see the same physical world.
"""

from __future__ import annotations

from napari_virtualstain.core.io import Slide

UNIT = "micrometer"


def slide_layer_data(slide: Slide, name: str | None = None) -> tuple:
    """A multiscale RGB image layer tuple with physical scale and units (µm) when mpp is known."""
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
        "units": (UNIT, UNIT) if known else ("pixel", "pixel"),
        "contrast_limits": [0, 255],
        "metadata": meta,
    }
    data = slide.levels if len(slide.levels) > 1 else slide.levels[0]
    return (data, kwargs, "image")


def layer_mpp(layer) -> float | None:
    """Level-0 µm per data pixel of ``layer``, or None when it is not known.

    Read from the layer's physical ``units`` and ``scale`` (set by any reader that knows them,
    e.g. napari-ome-zarr or ours); a layer in pixel units falls back to the ``mpp`` our own
    layers keep in their metadata. A scale in pixels is never taken as a pixel size.
    """
    factor = _um_per_unit((getattr(layer, "units", None) or (None,))[-1])
    if factor is not None:
        mpp = float(layer.scale[-1]) * factor
        return mpp if mpp > 0 else None
    mpp = (getattr(layer, "metadata", None) or {}).get("mpp")
    return float(mpp) if mpp else None


def _um_per_unit(unit) -> float | None:
    """µm in one ``unit`` (a pint unit or its name), or None for pixels / no length unit."""
    if unit is None:
        return None
    try:
        import pint

        ureg = getattr(unit, "_REGISTRY", None) or pint.get_application_registry()
        quantity = ureg.Quantity(1, unit if not isinstance(unit, str) else ureg(unit).units)
        if quantity.dimensionality != ureg.micrometer.dimensionality:
            return None
        return float(quantity.to(ureg.micrometer).magnitude)
    except Exception:  # noqa: BLE001 - an unknown unit name is "no physical unit"
        return None


def labels_layer_data(label_image) -> tuple:
    """A Labels layer tuple of a ``core.io.ngff_labels.LabelImage``: physical scale, per-label
    properties as ``features`` (with napari's ``index`` column), colours when stored."""
    known = label_image.mpp is not None
    kwargs = {
        "name": label_image.name,
        "multiscale": len(label_image.levels) > 1,
        "scale": (label_image.mpp, label_image.mpp) if known else (1.0, 1.0),
        "units": (UNIT, UNIT) if known else ("pixel", "pixel"),
        "translate": tuple(label_image.translate_um),
        "opacity": 0.55,
    }
    if label_image.properties:
        import pandas as pd

        rows = [
            {"index": v, **{k: x for k, x in p.items() if k != "label-value"}}
            for v, p in sorted(label_image.properties.items())
        ]
        # Row 0 describes the background, as napari expects for Labels; missing values are NaN
        # so that numeric columns stay numeric for napari's table and plot plugins.
        kwargs["features"] = pd.DataFrame.from_records([{"index": 0}, *rows])
    if label_image.colors:
        from napari.utils.colormaps import DirectLabelColormap

        colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
        colors |= {int(v): tuple(c / 255 for c in rgba) for v, rgba in label_image.colors.items()}
        kwargs["colormap"] = DirectLabelColormap(color_dict=colors)
    levels = label_image.levels
    return (levels if len(levels) > 1 else levels[0], kwargs, "labels")
