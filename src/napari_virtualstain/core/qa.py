"""QA of a virtual stain against the real one: the entry points of the QA widget and scripts.

Two levels of entry:

- :func:`iter_qa` / :func:`iter_lazy_qa` work on arrays already on one pixel grid (or with a
  :class:`~.registration.Registration` for the real stain);
- :func:`iter_layer_qa` / :func:`iter_layer_lazy_qa` take whole layers (:class:`LayerPixels`:
  pyramid levels + a :class:`~.registration.frames.LayerFrame`) and a region, read only what the
  region needs and bring every other layer (real stain, source, nuclei) onto the virtual stain's
  grid, whether the layers share the viewer's world or were registered. The widget calls these
  in a worker: no pixel is read or computed on the GUI thread.

Every function here is a progress generator (``core.progress``): it yields ``Progress`` and
returns a :class:`QAResult`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .deconvolution import estimate_background
from .geometry import Box, level_for_mpp
from .progress import Progress, ProgressGenerator
from .registration.frames import LayerFrame, is_identity, world_registration
from .residual import (
    RESIDUAL_KINDS,
    dab_disagreement,
    lazy_residual_map,
    reconstruct,
    residual_map,
    split_alpha,
    summarise,
)

# levels of a whole-slide residual pyramid up to this many pixels are computed in the worker;
# only finer ones stay lazy (napari computes those chunk by chunk when zoomed in)
EAGER_MAX_PX = 2048 * 2048


def map_name(kind: str) -> str:
    return "local SSIM" if kind == "ssim" else f"{kind} residual"


@dataclass(frozen=True)
class QARequest:
    """Residual layers of one region, with every image on one pixel grid.

    ``virtual`` defines the frame: ``box`` (a :class:`~.geometry.Box`) in its pixels of size
    ``mpp``.
    ``real`` is either on the same pixel grid, or (with ``registration``, virtual = fixed) the
    moving slide's pixels of size ``real_mpp``, warped here. ``source`` (same grid as virtual)
    with ``forward`` / ``backward`` adds the cycle error; ``labels`` (box-sized nuclei) adds the
    DAB disagreement; ``mask`` (box-sized, an ROI) restricts the summary means. ``virtual`` may
    be RGBA (the plugin's overlay): alpha 0 is "not computed", left out of every number.
    """

    virtual: object
    real: object
    mpp: float
    box: Box
    kinds: tuple[str, ...] = RESIDUAL_KINDS
    real_mpp: float | None = None
    registration: object | None = None
    mask: np.ndarray | None = None
    labels: np.ndarray | None = None
    source: object | None = None
    forward: object | None = None
    backward: object | None = None

    def __post_init__(self) -> None:
        y0, x0, y1, x1 = self.box.corners
        h, w = self.virtual.shape[:2]
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(f"box {self.box} is not inside the virtual image ({h}, {w})")
        if bad := [k for k in self.kinds if k not in RESIDUAL_KINDS]:
            raise ValueError(f"unknown residual kinds {bad}; expected some of {RESIDUAL_KINDS}")
        if self.registration is None and tuple(self.real.shape[:2]) != tuple(
            self.virtual.shape[:2]
        ):
            raise ValueError(
                f"real {self.real.shape} and virtual {self.virtual.shape} are not on one grid: "
                "register them first"
            )
        if (self.forward is None) != (self.backward is None) or (
            self.forward is not None and self.source is None
        ):
            raise ValueError("the cycle error needs source, forward and backward together")


@dataclass(frozen=True)
class QAResult:
    """Residual maps (name -> (array or list of levels, kind)), summary numbers, seconds per map.

    ``box`` is the region in the virtual stain's pixels of size ``mpp``; ``scale`` and
    ``translate`` (world units), when set, place the maps' pixel (0, 0) in the viewer's world.
    """

    maps: dict
    summary: dict
    seconds: dict
    box: Box
    mpp: float
    scale: tuple[float, float] | None = None
    translate: tuple[float, float] | None = None


def _crop(arr, box: Box) -> np.ndarray:
    return np.asarray(arr[box.slices])


def iter_qa(request: QARequest) -> ProgressGenerator[QAResult]:
    """Build the requested maps for the box; returns a :class:`QAResult`."""
    r, box = request, request.box
    steps = (
        list(r.kinds)
        + (["cycle"] if r.forward is not None else [])
        + (["disagreement"] if r.labels is not None else [])
    )
    total = len(steps) + 2
    virtual = _crop(r.virtual, box)
    yield Progress(0, total, "reading the real stain")
    real = r.real
    if r.registration is not None:
        shape = r.virtual.shape[:2]
        real = r.registration.warp(real, shape, out_mpp=r.mpp, moving_mpp=r.real_mpp or r.mpp)
    real = _crop(real, box)
    maps, seconds, extra = {}, {}, {}
    backgrounds = (estimate_background(split_alpha(virtual)[0]), estimate_background(real))
    for i, step in enumerate(steps, start=1):
        yield Progress(i, total, f"building {step}")
        t0 = time.perf_counter()
        if step == "cycle":
            source = split_alpha(_crop(r.source, box))[0]
            recon = reconstruct(source, r.forward, r.backward, mpp=r.mpp)
            maps["cycle error (source - reconstruction)"] = (
                residual_map("rgb", source, recon),
                "rgb",
            )
            maps["cycle local SSIM"] = (residual_map("ssim", source, recon), "ssim")
            cycle = summarise(source, recon, mask=r.mask)
            extra.update({f"cycle_{k}": cycle[k] for k in ("mean_abs_rgb", "ssim", "psnr_db")})
        elif step == "disagreement":
            d = dab_disagreement(np.asarray(r.labels), virtual, real, r.mpp)
            maps["DAB disagreement"] = (d.layer, "disagreement")
            extra.update({f"nuclei_{k}": v for k, v in d.to_dict().items()})
        else:
            maps[map_name(step)] = (
                residual_map(step, virtual, real, backgrounds=backgrounds),
                step,
            )
        seconds[step] = time.perf_counter() - t0
    yield Progress(total - 1, total, "summarising")
    summary = summarise(virtual, real, mask=r.mask)
    summary.update(extra)
    return QAResult(maps, summary, seconds, box, r.mpp)


def iter_lazy_qa(
    virtual_levels: list,
    real_levels: list,
    mpp: float,
    kinds: tuple[str, ...] = RESIDUAL_KINDS,
    registration=None,
    real_mpp: float | None = None,
    chunk_px: int = 512,
    eager_max_px: int = EAGER_MAX_PX,
) -> ProgressGenerator[QAResult]:
    """Whole-slide residual pyramids (computed as the viewer asks, except the small levels).

    Level ``i`` of each map is built from level ``i`` of the virtual pyramid (pixel size
    ``mpp * downsample``) and the real stain on the same grid: its own level ``i``, or with
    ``registration`` its finest level not finer than needed, warped lazily. Levels of at most
    ``eager_max_px`` pixels are computed here, in the caller's worker, so a zoomed-out viewer
    never computes on its GUI thread; finer levels stay dask arrays.
    """
    mpps = [mpp * virtual_levels[0].shape[0] / v.shape[0] for v in virtual_levels]
    if registration is not None:
        r0 = real_mpp or mpp
        r_mpps = [r0 * real_levels[0].shape[0] / r.shape[0] for r in real_levels]
        pick = [level_for_mpp(r_mpps, out) for out in mpps]
        real_levels = [
            registration.warp(real_levels[j], v.shape[:2], out, r_mpps[j], chunk_px=chunk_px)
            for j, v, out in zip(pick, virtual_levels, mpps, strict=True)
        ]
    elif len(real_levels) < len(virtual_levels) or any(
        tuple(r.shape[:2]) != tuple(v.shape[:2])
        for r, v in zip(real_levels, virtual_levels, strict=False)
    ):
        raise ValueError("real and virtual pyramids are not on one grid: register them first")
    n_eager = sum(int(np.prod(v.shape[:2])) <= eager_max_px for v in virtual_levels)
    first_eager = len(virtual_levels) - max(n_eager, 1)
    total = len(kinds) * len(virtual_levels) + 2
    yield Progress(0, total, "reading the coarsest level")
    coarse_v, coarse_r = np.asarray(virtual_levels[-1]), np.asarray(real_levels[-1])
    backgrounds = (
        estimate_background(split_alpha(coarse_v)[0]),
        estimate_background(split_alpha(coarse_r)[0]),
    )
    maps, seconds, done = {}, {}, 1
    for kind in kinds:
        t0 = time.perf_counter()
        levels = []
        for i, (v, r) in enumerate(zip(virtual_levels, real_levels, strict=False)):
            yield Progress(done, total, f"{kind}: level {i} of {len(virtual_levels) - 1}")
            done += 1
            if i < first_eager:
                levels.append(lazy_residual_map(kind, v, r, chunk_px, backgrounds=backgrounds))
            else:
                vi, ri = (coarse_v, coarse_r) if i == len(virtual_levels) - 1 else (v, r)
                levels.append(
                    residual_map(kind, np.asarray(vi), np.asarray(ri), backgrounds=backgrounds)
                )
        maps[map_name(kind)] = (levels, kind)
        seconds[kind] = time.perf_counter() - t0
    yield Progress(total - 1, total, "summarising")
    summary = summarise(coarse_v, coarse_r)
    summary["summary_level_mpp"] = mpps[-1]
    return QAResult(maps, summary, seconds, Box.from_shape(virtual_levels[0].shape), mpp)


# ----------------------------------------------------------------------------- whole layers


@dataclass(frozen=True)
class LayerPixels:
    """One layer as the QA reads it: its pyramid levels (numpy, dask or zarr) and its frame."""

    name: str
    levels: tuple
    frame: LayerFrame

    @classmethod
    def from_levels(cls, name: str, levels, scale, translate=(0.0, 0.0), mpp=None):
        levels = tuple(levels) if isinstance(levels, list | tuple) else (levels,)
        frame = LayerFrame.from_layer_values([lv.shape for lv in levels], scale, translate, mpp)
        return cls(name, levels, frame)


def read_aligned(
    pixels: LayerPixels,
    target: LayerFrame,
    level: int,
    box: Box,
    registration=None,
    order: int = 1,
    what: str = "layer",
) -> np.ndarray:
    """``pixels`` over ``target``'s ``box`` at ``level``, resampled onto that grid.

    Without ``registration`` both layers must share the viewer's world and ``pixels`` must
    cover the box (else ``ValueError``: register them first). The same grid is a plain crop.
    """
    if registration is None:
        if not pixels.frame.covers(target, level, box):
            raise ValueError(
                f"the {what} layer {pixels.name!r} does not cover this region in the viewer: "
                "register them first, or choose a region inside both"
            )
        registration = world_registration(target, pixels.frame)
        if is_identity(registration, target, pixels.frame):
            return np.asarray(pixels.levels[level][box.slices])
    out_mpp = target.level_mpps[level]
    j = pixels.frame.level_for_mpp(out_mpp)
    warped = registration.warp(
        pixels.levels[j],
        target.shapes_px[level],
        out_mpp,
        pixels.frame.level_mpps[j],
        order=order,
        cval=255 if order else 0,
    )
    return np.asarray(warped[box.slices])


def _loaded(model):
    """A generator given as a name or path is loaded here, in the worker."""
    if isinstance(model, str | Path):
        from .models import load_model

        return load_model(str(model), device="cpu")
    return model


def check_real_stain(real: LayerPixels, virtual_direction: str | None) -> None:
    """Refuse a real stain that does not look like the virtual stain's own stain.

    ``virtual_direction`` is the virtual stain's model direction ("ki67->he": a virtual H&E);
    residuals of a virtual H&E against a real Ki-67 are a difference of stains, not an error
    of the model (the QA dock gave SSIM 0.76 for one such pair without a word). None (a layer
    without provenance) is not checked.
    """
    from .engine.source_stain import check_source_stain, describe

    if not virtual_direction or "->" not in virtual_direction:
        return
    source, target = virtual_direction.split("->", 1)
    rgb, _ = registration_image(real, 1024)
    verdict = check_source_stain(rgb, f"{target}->{source}")  # "does it look like target"
    if not verdict.ok:
        raise ValueError(
            f"the real stain {real.name!r} looks like {describe(verdict.looks_like)}, but the "
            f"virtual stain is {target} (model {virtual_direction}): compare it with a real "
            f"{target} slide"
        )


def iter_layer_qa(
    virtual: LayerPixels,
    real: LayerPixels,
    level: int,
    box: Box,
    kinds: tuple[str, ...] = RESIDUAL_KINDS,
    registration=None,
    mask: np.ndarray | None = None,
    labels: LayerPixels | None = None,
    source: LayerPixels | None = None,
    forward=None,
    backward=None,
    virtual_direction: str | None = None,
) -> ProgressGenerator[QAResult]:
    """Residual maps of ``box`` at ``level`` of the virtual stain, placed in the world.

    ``registration`` (virtual = fixed, real = moving) places the real stain; without one it is
    placed by the layers' world. ``source`` (and ``labels``) are always placed by the world.
    ``forward`` / ``backward`` are loaded models, or names / paths loaded here.
    ``virtual_direction``: see :func:`check_real_stain`.
    """
    yield Progress(0, 1, "reading the layers")
    check_real_stain(real, virtual_direction)
    region = np.asarray(virtual.levels[level][box.slices])
    real_region = read_aligned(real, virtual.frame, level, box, registration, what="real stain")
    extra = {}
    if labels is not None:
        extra["labels"] = read_aligned(labels, virtual.frame, level, box, order=0, what="nuclei")
    if forward is not None or backward is not None:
        if source is None or forward is None or backward is None:
            raise ValueError("the cycle error needs a source layer and both generators")
        yield Progress(0, 1, "loading the generators")
        extra["source"] = read_aligned(source, virtual.frame, level, box, what="source")
        extra["forward"], extra["backward"] = _loaded(forward), _loaded(backward)
    request = QARequest(
        region,
        split_alpha(real_region)[0],
        virtual.frame.level_mpps[level],
        Box.from_shape(box.shape),
        kinds=kinds,
        mask=mask,
        **extra,
    )
    result = yield from iter_qa(request)
    scale, translate = virtual.frame.placement(level, box)
    return replace(result, box=box, scale=scale, translate=translate)


def iter_layer_lazy_qa(
    virtual: LayerPixels,
    real: LayerPixels,
    kinds: tuple[str, ...] = RESIDUAL_KINDS,
    registration=None,
    chunk_px: int = 512,
    virtual_direction: str | None = None,
) -> ProgressGenerator[QAResult]:
    """Whole-slide residual pyramids of two layers (see :func:`iter_lazy_qa`), placed in the
    world; ``real`` is placed by ``registration`` or, without one, by the layers' world.
    ``virtual_direction``: see :func:`check_real_stain`."""
    yield Progress(0, 1, "checking the real stain")
    check_real_stain(real, virtual_direction)
    frame = virtual.frame
    if registration is None:
        if not real.frame.covers(frame, 0, Box.from_shape(frame.shapes_px[0])):
            raise ValueError(
                f"the real stain {real.name!r} does not cover the virtual stain in the viewer: "
                "register them first"
            )
        registration = world_registration(frame, real.frame)
        if is_identity(registration, frame, real.frame):
            registration = None
    result = yield from iter_lazy_qa(
        list(virtual.levels),
        list(real.levels),
        frame.mpp,
        kinds,
        registration=registration,
        real_mpp=real.frame.mpp,
        chunk_px=chunk_px,
    )
    return replace(result, scale=frame.scale, translate=frame.translate)


# ----------------------------------------------------------------------------- registration


def registration_image(pixels: LayerPixels, max_side_px: int) -> tuple[np.ndarray, float]:
    """(RGB, mpp) of the finest level that fits ``max_side_px``; an RGBA overlay's pixels not
    computed yet (alpha 0) become glass, so they read as "no tissue"."""
    level = pixels.frame.level_for_extent(
        max(pixels.frame.shapes_px[0]) * pixels.frame.mpp, max_side_px
    )
    rgb, valid = split_alpha(np.asarray(pixels.levels[level]))
    if valid is not None:
        rgb = np.where(valid[..., None], rgb, np.uint8(255)).astype(np.uint8)
    return rgb, pixels.frame.level_mpps[level]


def iter_register_layers(
    fixed: LayerPixels,
    moving: LayerPixels,
    config=None,
    max_side_px: int = 1024,
    virtual_direction: str | None = None,
) -> ProgressGenerator:
    """Register ``moving`` (the real stain) onto ``fixed`` (the virtual stain, RGB or RGBA);
    returns a :class:`~.registration.Registration` between their level-0 µm frames.
    ``virtual_direction``: see :func:`check_real_stain`."""
    from .registration import iter_register

    yield Progress(0, 100, "reading the layers")
    check_real_stain(moving, virtual_direction)
    (f_img, f_mpp), (m_img, m_mpp) = (registration_image(p, max_side_px) for p in (fixed, moving))
    return (
        yield from iter_register(
            f_img,
            m_img,
            f_mpp,
            m_mpp,
            config,
            fixed_level0=(fixed.frame.mpp, fixed.frame.shapes_px[0]),
            moving_level0=(moving.frame.mpp, moving.frame.shapes_px[0]),
        )  # fmt: skip
    )
