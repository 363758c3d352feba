"""Layer data for QA results and registered slides; the only QA code that knows napari's layout.

Signed residuals use one blue-white-red colormap with symmetric contrast limits, so white is
always "no difference"; local SSIM uses a grey ramp (black = dissimilar); DAB disagreement is a
labels layer (magenta: positive only in the virtual stain, cyan: only in the real one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_virtualstain.core.geometry import level_for_mpp
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
    v = v[np.isfinite(v)]  # NaN: pixels the overlay has not computed
    top = float(np.quantile(v, quantile)) if v.size else 0.0
    top = max(top, 1e-3)
    return -top, top


@dataclass(frozen=True)
class Legend:
    """What a QA layer's colours mean: a colour bar from ``low`` to ``high`` in ``units``."""

    title: str
    units: str
    colors: tuple  # RGBA stops, low to high
    low: float
    high: float
    low_means: str
    high_means: str

    def ticks(self) -> list[str]:
        mid = (self.low + self.high) / 2
        return [f"{v:+.3g}" if self.low < 0 else f"{v:.3g}" for v in (self.low, mid, self.high)]


UNITS = {
    "rgb": "grey levels / 255 (mean of R, G, B)",
    "od": "optical density (mean of R, G, B)",
    "dab": "DAB optical density",
    "hematoxylin": "hematoxylin optical density",
    "ssim": "local SSIM (11 px window)",
}


def legend(name: str, kind: str, contrast_limits) -> Legend | None:
    """The legend of a QA layer (``None`` for a kind without a colour scale)."""
    lo, hi = (float(v) for v in contrast_limits)
    if kind == "ssim":
        return Legend(name, UNITS["ssim"], ((0, 0, 0, 1), (1, 1, 1, 1)), lo, hi,
                      "dissimilar", "identical")  # fmt: skip
    if kind == "disagreement":
        return Legend(name, "nuclei", ((1, 0, 1, 1), (0, 1, 1, 1)), 1.0, 2.0,
                      "positive only in the virtual stain", "positive only in the real stain")  # fmt: skip
    if kind not in UNITS:
        return None
    cycle = name.startswith("cycle")
    a, b = ("source", "reconstruction") if cycle else ("virtual", "real")
    if kind == "rgb":
        low, high = f"{a} darker", f"{a} lighter"
    else:
        low, high = f"{a} holds less stain than {b}", f"{a} holds more stain"
    return Legend(name, f"{UNITS[kind]}, {a} - {b}", tuple(map(tuple, DIVERGING["colors"])),
                  lo, hi, low, high)  # fmt: skip


def layer_legend(layer) -> Legend | None:
    """The legend of a napari layer built by :func:`qa_layer_data` (None for other layers)."""
    meta = (layer.metadata or {}).get("napari_virtualstain", {})
    kind = meta.get("qa_kind")
    if kind is None:
        return None
    limits = getattr(layer, "contrast_limits", (1, 2)) if kind != "disagreement" else (1, 2)
    return legend(layer.name, kind, limits)


def qa_layer_data(result, world_mpp: float | None = None, units=None) -> list[tuple]:
    """Layer data tuples of a :class:`~napari_virtualstain.core.qa.QAResult`.

    Layers are placed over the region they were computed for: by the result's ``scale`` and
    ``translate`` (world units) when it has them, else scale = the region's pixel size in world
    units (µm when the slides' world is µm, else ``world_mpp`` µm per world unit). ``units``
    (the virtual stain layer's) are given to every layer.
    """
    from napari.utils.colormaps import DirectLabelColormap

    if result.scale is not None:
        px_scale, translate = tuple(result.scale), tuple(result.translate)
    else:
        px = result.mpp if world_mpp is None else result.mpp / world_mpp
        px_scale, translate = (px, px), (result.box.y * px, result.box.x * px)
    out = []
    for name, (data, kind) in result.maps.items():
        if isinstance(data, list) and len(data) == 1:  # a one-level pyramid is one image
            data = data[0]
        multiscale = isinstance(data, list)
        # a pyramid's coarsest level is already computed: display limits come from it
        sample = data[-1] if multiscale else data
        placed = {"scale": px_scale, "translate": translate, "multiscale": multiscale}
        if units is not None:  # the virtual stain's physical units (µm), so napari can mix them
            placed["units"] = tuple(str(u) for u in tuple(units)[-2:])
        meta = {
            "napari_virtualstain": {
                "qa_kind": kind,
                "box_px": list(result.box.corners),
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


def _um_to_world(frame) -> np.ndarray:
    """3x3 affine from a layer's µm frame (level-0 pixel index x mpp) to the viewer's world."""
    k = np.asarray(frame.scale) / frame.mpp
    return np.array([[k[0], 0.0, frame.translate[0]], [0.0, k[1], frame.translate[1]], [0, 0, 1.0]])


def registered_layer_data(layer_tuple: tuple, registration, fixed_frame=None) -> tuple:
    """The moving slide's layer tuple, shown over the fixed slide in the viewer's world.

    ``fixed_frame`` (a ``core.registration.frames.LayerFrame``) places the fixed slide; without
    it the world is the fixed slide's µm. An affine registration only sets the layer's
    ``affine`` (exact, no resampling). With a displacement field each pyramid level is warped
    lazily onto the fixed slide's levels, chunk by chunk as napari asks for them.
    """
    data, kwargs, kind = layer_tuple
    kwargs = dict(kwargs)
    name = kwargs.get("name", "moving")
    kwargs["name"] = f"{name} (registered)"
    levels = data if isinstance(data, list | tuple) else [data]
    to_world = np.eye(3) if fixed_frame is None else _um_to_world(fixed_frame)
    if registration.is_affine:
        kwargs.pop("scale", None)
        kwargs.pop("translate", None)
        kwargs["affine"] = to_world @ registration.layer_affine()  # moving px -> fixed world
        return data, kwargs, kind
    if fixed_frame is None:
        raise ValueError("a non-rigid registration needs the fixed slide's frame (level shapes)")
    moving_mpp0 = registration.moving_mpp
    moving_mpps = [moving_mpp0 * levels[0].shape[0] / lv.shape[0] for lv in levels]
    warped = []
    for shape, mpp in zip(fixed_frame.shapes_px, fixed_frame.level_mpps, strict=True):
        # read the moving level closest to (not coarser than) the output pixel size
        src = level_for_mpp(moving_mpps, mpp)
        warped.append(registration.warp(levels[src], shape[:2], mpp, moving_mpps[src]))
    kwargs["scale"], kwargs["translate"] = fixed_frame.scale, fixed_frame.translate
    kwargs["multiscale"] = len(warped) > 1
    return (warped if len(warped) > 1 else warped[0]), kwargs, kind


def map_shapes(
    shapes_world: list[np.ndarray],
    shape_types: list[str],
    registration,
    fixed_frame,
    moving_frame,
) -> list[np.ndarray]:
    """Shapes over the fixed slide (napari vertices, world units) as polygons over the moving
    slide (world units), through the registration.

    Rectangles and ellipses become polygons first, so a rotated or warped ROI keeps its outline.
    """
    from napari_virtualstain.core.roi import ROI

    rois = [
        ROI.from_pixels(kind, fixed_frame.world_to_um(np.asarray(s)), 1.0, f"shape {i}")
        for i, (s, kind) in enumerate(zip(shapes_world, shape_types, strict=True))
    ]
    mapped = registration.map_rois(rois, "fixed_to_moving")
    return [moving_frame.px_to_world(r.polygon_um() / moving_frame.mpp, 0) for r in mapped]
