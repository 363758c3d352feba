"""Layer data for QA results and registered slides; the only QA code that knows napari's layout.

Signed residuals use one blue-white-red colormap with symmetric contrast limits, so white is
always "no difference"; local SSIM uses a grey ramp (black = dissimilar); DAB disagreement is a
labels layer (magenta: positive only in the virtual stain, cyan: only in the real one).
"""

from __future__ import annotations

import numpy as np

from napari_virtualstain.core.residual import POSITIVE_ONLY_IN_A, POSITIVE_ONLY_IN_B

DIVERGING = {
    "name": "residual blue-white-red",
    "colors": [[0.0, 0.25, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.1, 0.0, 1.0]],
}
DISAGREEMENT_COLORS = {POSITIVE_ONLY_IN_A: "magenta", POSITIVE_ONLY_IN_B: "cyan"}


def _diverging_colormap():
    from napari.utils.colormaps import Colormap

    return Colormap(DIVERGING["colors"], name=DIVERGING["name"])


def symmetric_limits(values: np.ndarray, quantile: float = 0.99) -> tuple[float, float]:
    """±the ``quantile`` of |values| (never 0, so a zero residual still displays as white)."""
    v = np.abs(np.asarray(values, dtype=np.float32))
    top = float(np.quantile(v[np.isfinite(v)], quantile)) if v.size else 0.0
    top = max(top, 1e-3)
    return -top, top


def qa_layer_data(result, world_mpp: float | None = None) -> list[tuple]:
    """Layer data tuples of a :class:`~napari_virtualstain.core.residual.QAResult`.

    Layers are placed over the region they were computed for: scale = the region's pixel size in
    world units (µm when the slides' world is µm, else ``world_mpp`` µm per world unit).
    """
    from napari.utils.colormaps import DirectLabelColormap

    px = result.mpp if world_mpp is None else result.mpp / world_mpp
    y0, x0 = result.box_px[:2]
    out = []
    for name, (data, kind) in result.maps.items():
        multiscale = isinstance(data, list)
        # a pyramid's coarsest level is already computed: display limits come from it
        sample = data[-1] if multiscale else data
        placed = {"scale": (px, px), "translate": (y0 * px, x0 * px), "multiscale": multiscale}
        meta = {
            "napari_virtualstain": {
                "qa_kind": kind,
                "box_px": list(result.box_px),
                "mpp": result.mpp,
            }
        }
        if kind == "disagreement":
            cmap = DirectLabelColormap(
                color_dict={None: "transparent", 0: "transparent", **DISAGREEMENT_COLORS}
            )
            out.append(
                (
                    data,
                    {"name": name, "colormap": cmap, "opacity": 0.8, "metadata": meta, **placed},
                    "labels",
                )
            )
        elif kind == "ssim":
            out.append(
                (
                    data,
                    {
                        "name": name,
                        "colormap": "gray",
                        "contrast_limits": (0.0, 1.0),
                        "metadata": meta,
                        **placed,
                    },
                    "image",
                )
            )
        else:
            out.append(
                (
                    data,
                    {
                        "name": name,
                        "colormap": _diverging_colormap(),
                        "contrast_limits": symmetric_limits(sample),
                        "metadata": meta,
                        **placed,
                    },
                    "image",
                )
            )
    return out


def registered_layer_data(
    layer_tuple: tuple, registration, fixed_level_shapes=None, fixed_level_mpps=None
) -> tuple:
    """The moving slide's layer tuple, shown in the fixed slide's µm world.

    An affine registration only sets the layer's ``affine`` (exact, no resampling). With a
    displacement field each pyramid level is warped lazily onto the fixed slide's levels
    (``fixed_level_shapes`` / ``fixed_level_mpps``), chunk by chunk as napari asks for them.
    """
    data, kwargs, kind = layer_tuple
    kwargs = dict(kwargs)
    name = kwargs.get("name", "moving")
    kwargs["name"] = f"{name} (registered)"
    levels = data if isinstance(data, list | tuple) else [data]
    if registration.is_affine:
        kwargs.pop("scale", None)
        kwargs["affine"] = registration.layer_affine()  # moving px -> fixed µm
        return data, kwargs, kind
    if fixed_level_shapes is None or fixed_level_mpps is None:
        raise ValueError("a non-rigid registration needs the fixed slide's level shapes and mpps")
    moving_mpp0 = registration.moving_mpp
    moving_mpps = [moving_mpp0 * levels[0].shape[0] / lv.shape[0] for lv in levels]
    warped = []
    for shape, mpp in zip(fixed_level_shapes, fixed_level_mpps, strict=True):
        # read the moving level closest to (not coarser than) the output pixel size
        src = max((i for i, m in enumerate(moving_mpps) if m <= mpp * 1.01), default=0)
        warped.append(registration.warp(levels[src], shape[:2], mpp, moving_mpps[src]))
    kwargs["scale"] = (fixed_level_mpps[0], fixed_level_mpps[0])
    kwargs["multiscale"] = len(warped) > 1
    return (warped if len(warped) > 1 else warped[0]), kwargs, kind


def map_shapes(
    shapes_world_um: list[np.ndarray],
    shape_types: list[str],
    registration,
    direction: str = "fixed_to_moving",
) -> list[np.ndarray]:
    """Shapes (napari vertices in world µm of one slide) as polygons (µm) of the other slide.

    Rectangles and ellipses become polygons first, so a rotated or warped ROI keeps its outline.
    """
    from napari_virtualstain.core.roi import ROI

    rois = [
        ROI.from_pixels(kind, np.asarray(s)[:, -2:], 1.0, f"shape {i}")
        for i, (s, kind) in enumerate(zip(shapes_world_um, shape_types, strict=True))
    ]
    return [r.polygon_um() for r in registration.map_rois(rois, direction)]
