"""Residual maps between a virtual stain and the real one, and cycle-reconstruction errors.

Every map is a signed float32 (y, x) image (or, for DAB disagreement, a small label image) that
can be computed on a numpy region or lazily, chunk by chunk, on dask arrays. Conventions:

* ``rgb``: mean over R, G, B of ``(a - b) / 255``, in [-1, 1]. Negative = ``a`` darker.
* ``od``: mean over channels of the optical-density difference ``OD(a) - OD(b)``; positive =
  ``a`` holds more stain.
* ``dab`` / ``hematoxylin``: the difference of one colour-deconvolved stain (OD units), which is
  what a pathologist reads on an IHC.
* ``ssim``: the local SSIM (11-px Gaussian window), 1 = locally identical.

For real vs virtual, ``a`` is the virtual stain and ``b`` the registered real one. For the cycle
error (seed 000, Fig. 4), ``a`` is the source and ``b`` its reconstruction ``G_back(G_fwd(x))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .deconvolution import QUPATH_HDAB, StainVectors, estimate_background, optical_density
from .deconvolution import deconvolve as _deconvolve
from .metrics.image import WINDOW_PX, ssim_map

RESIDUAL_KINDS = ("rgb", "od", "dab", "hematoxylin", "ssim")
# disagreement label values
POSITIVE_ONLY_IN_A = 1
POSITIVE_ONLY_IN_B = 2


def _check_rgb_pair(a, b) -> None:
    for name, img in (("first", a), ("second", b)):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"{name} image must be (y, x, 3) uint8, found {img.shape} {img.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape[:2]} vs {b.shape[:2]}")


def residual_map(
    kind: str,
    a: np.ndarray,
    b: np.ndarray,
    stains: StainVectors = QUPATH_HDAB,
    backgrounds: tuple | None = None,
) -> np.ndarray:
    """One residual map of two (y, x, 3) uint8 images; see the module doc for ``kind``.

    ``backgrounds`` are the glass RGB levels of ``a`` and ``b``; pass them when tiling, so every
    tile uses the same ones (None estimates them from these pixels).
    """
    if kind not in RESIDUAL_KINDS:
        raise ValueError(f"kind must be one of {RESIDUAL_KINDS}, got {kind!r}")
    a, b = np.asarray(a), np.asarray(b)
    _check_rgb_pair(a, b)
    if kind == "rgb":
        return ((a.astype(np.float32) - b.astype(np.float32)) / 255.0).mean(axis=-1)
    if kind == "ssim":
        return ssim_map(a, b)
    bg_a, bg_b = backgrounds or (estimate_background(a), estimate_background(b))
    if kind == "od":
        return (optical_density(a, bg_a) - optical_density(b, bg_b)).mean(axis=-1)
    i = stains.index(kind)
    return _deconvolve(a, stains, bg_a)[..., i] - _deconvolve(b, stains, bg_b)[..., i]


def sample_background(image, max_px: int = 512) -> np.ndarray:
    """Glass RGB level of a (possibly huge, dask) image from a strided thumbnail."""
    step = max(1, max(image.shape[:2]) // max_px)
    return estimate_background(np.asarray(image[::step, ::step]))


def lazy_residual_map(
    kind: str,
    a,
    b,
    chunk_px: int = 512,
    stains: StainVectors = QUPATH_HDAB,
    backgrounds: tuple | None = None,
):
    """:func:`residual_map` as a dask array, computed per chunk (with a halo for ``ssim``)."""
    import dask.array as da

    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    if kind not in RESIDUAL_KINDS:
        raise ValueError(f"kind must be one of {RESIDUAL_KINDS}, got {kind!r}")
    if kind in ("od", "dab", "hematoxylin") and backgrounds is None:
        backgrounds = (sample_background(a), sample_background(b))
    chunks = (chunk_px, chunk_px, 3)
    a = da.asarray(a).rechunk(chunks)
    b = da.asarray(b).rechunk(chunks)

    def block(x, y):
        return residual_map(kind, x, y, stains, backgrounds)

    if kind != "ssim":
        return da.map_blocks(block, a, b, dtype=np.float32, drop_axis=2)
    # the SSIM window reaches WINDOW_PX // 2 px: a halo that wide makes tiles seamless
    depth = {0: WINDOW_PX // 2, 1: WINDOW_PX // 2, 2: 0}
    a, b = (da.overlap.overlap(x, depth=depth, boundary="reflect") for x in (a, b))
    out = da.map_blocks(block, a, b, dtype=np.float32, drop_axis=2)
    return da.overlap.trim_internal(out, {0: depth[0], 1: depth[1]}, boundary="reflect")


# ----------------------------------------------------------------------------- cycle error


def as_rgb_function(model, mpp: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A (y, x, 3) uint8 -> (y, x, 3) uint8 function from a ``LoadedModel``, a torch module or
    a plain callable (returned as is)."""
    if hasattr(model, "card") and hasattr(model, "module"):  # models.LoadedModel
        from .engine import stain_image

        # without a stated pixel size the image is taken to be at the model's own resolution
        run_mpp = mpp if mpp is not None else model.card.mpp
        return lambda rgb: stain_image(model, rgb, mpp=run_mpp)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        from .engine.stain import pad_to_multiple
        from .models import infer_tiles

        def run(rgb: np.ndarray) -> np.ndarray:
            h, w = rgb.shape[:2]
            # generators downsample 2-4 times; 32 covers every architecture in core.models
            return infer_tiles(model, pad_to_multiple(rgb, 32)[None])[0, :h, :w]

        return run
    if callable(model):
        return model
    raise TypeError(f"cannot run {type(model).__name__} as a generator")


def reconstruct(source: np.ndarray, forward, backward) -> np.ndarray:
    """``G_back(G_fwd(source))`` of a (y, x, 3) uint8 region."""
    fwd, back = as_rgb_function(forward), as_rgb_function(backward)
    out = back(fwd(np.asarray(source)))
    if out.shape != source.shape or out.dtype != np.uint8:
        raise ValueError(
            f"the generator pair returned {out.shape} {out.dtype} for a {source.shape} uint8 input"
        )
    return out


def lazy_reconstruction(source, forward, backward, halo_px: int = 32, chunk_px: int = 512):
    """:func:`reconstruct` per chunk, with a reflected ``halo_px`` of context around each."""
    import dask.array as da

    fwd, back = as_rgb_function(forward), as_rgb_function(backward)
    src = da.asarray(source).rechunk((chunk_px, chunk_px, 3))
    return da.map_overlap(
        lambda x: back(fwd(x)),
        src,
        depth={0: halo_px, 1: halo_px, 2: 0},
        boundary="reflect",
        dtype=np.uint8,
        trim=True,
        allow_rechunk=False,
    )


# ----------------------------------------------------------------------------- DAB positivity


@dataclass(frozen=True)
class Disagreement:
    """Per-nucleus DAB positivity of two images over the same nuclei."""

    layer: np.ndarray  # (y, x) uint8: 0, POSITIVE_ONLY_IN_A, POSITIVE_ONLY_IN_B
    n_nuclei: int
    both_positive: int
    both_negative: int
    only_a: int
    only_b: int

    @property
    def agreement(self) -> float:
        return (self.both_positive + self.both_negative) / self.n_nuclei if self.n_nuclei else 1.0

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("n_nuclei", "both_positive", "both_negative", "only_a", "only_b", "agreement")
        }


def dab_disagreement(
    labels: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    mpp: float,
    stains: StainVectors = QUPATH_HDAB,
    config=None,
) -> Disagreement:
    """Nuclei positive in one image and negative in the other, measured as the Ki-67 module does
    (QuPath's nucleus DAB OD mean against its threshold), on the same nuclei ``labels``."""
    from .ki67.measure import measure_nuclei

    labels = np.asarray(labels)
    _check_rgb_pair(np.asarray(a), np.asarray(b))
    na = measure_nuclei(labels, a, mpp, stains=stains, config=config)
    nb = measure_nuclei(labels, b, mpp, stains=stains, config=config)
    pa, pb = na.positive, nb.positive
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.uint8)
    lut[na.label[pa & ~pb]] = POSITIVE_ONLY_IN_A
    lut[na.label[pb & ~pa]] = POSITIVE_ONLY_IN_B
    return Disagreement(
        layer=lut[labels],
        n_nuclei=len(na),
        both_positive=int((pa & pb).sum()),
        both_negative=int((~pa & ~pb).sum()),
        only_a=int((pa & ~pb).sum()),
        only_b=int((pb & ~pa).sum()),
    )


# ----------------------------------------------------------------------------- summaries


def summarise(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, stains: StainVectors = QUPATH_HDAB
) -> dict[str, float]:
    """Summary numbers of a region: mean |residual| per kind, SSIM, PSNR and MAE.

    ``mask`` (y, x) bool restricts the residual means (an ROI); SSIM and PSNR use the bounding
    region given, because windows need whole neighbourhoods.
    """
    from .metrics.image import mae, psnr, ssim

    a, b = np.asarray(a), np.asarray(b)
    _check_rgb_pair(a, b)
    sel = np.ones(a.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    if sel.shape != a.shape[:2] or not sel.any():
        raise ValueError(f"mask must be a non-empty {a.shape[:2]} boolean image")
    backgrounds = (estimate_background(a), estimate_background(b))
    out = {
        f"mean_abs_{k}": float(np.abs(residual_map(k, a, b, stains, backgrounds)[sel]).mean())
        for k in ("rgb", "od", "dab", "hematoxylin")
    }
    out["ssim"] = ssim(a, b) if min(a.shape[:2]) >= WINDOW_PX else float("nan")
    out["psnr_db"] = psnr(a, b)
    out["mae"] = mae(a[sel], b[sel])
    return out


# ----------------------------------------------------------------------------- QA entry point


@dataclass(frozen=True)
class QARequest:
    """What the QA widget (or a script) asks for: residual layers of one region.

    ``virtual`` defines the frame: ``box_px`` = (y0, x0, y1, x1) in its pixels of size ``mpp``.
    ``real`` is either on the same pixel grid, or (with ``registration``, virtual = fixed) the
    moving slide's pixels of size ``real_mpp``, warped here. ``source`` (same grid as virtual)
    with ``forward`` / ``backward`` adds the cycle error; ``labels`` (box-sized nuclei) adds the
    DAB disagreement; ``mask`` (box-sized, an ROI) restricts the summary means.
    """

    virtual: object
    real: object
    mpp: float
    box_px: tuple[int, int, int, int]
    kinds: tuple[str, ...] = RESIDUAL_KINDS
    real_mpp: float | None = None
    registration: object | None = None
    mask: np.ndarray | None = None
    labels: np.ndarray | None = None
    source: object | None = None
    forward: object | None = None
    backward: object | None = None

    def __post_init__(self) -> None:
        y0, x0, y1, x1 = self.box_px
        h, w = self.virtual.shape[:2]
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(f"box {self.box_px} is not inside the virtual image ({h}, {w})")
        if bad := [k for k in self.kinds if k not in RESIDUAL_KINDS]:
            raise ValueError(f"unknown residual kinds {bad}; expected some of {RESIDUAL_KINDS}")
        if self.registration is None and tuple(self.real.shape) != tuple(self.virtual.shape):
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
    """Residual maps of the box (name -> (array, kind)), summary numbers and seconds per map."""

    maps: dict
    summary: dict
    seconds: dict
    box_px: tuple[int, int, int, int]
    mpp: float


def _crop(arr, box) -> np.ndarray:
    y0, x0, y1, x1 = box
    return np.asarray(arr[y0:y1, x0:x1])


def iter_qa(request: QARequest):
    """Build the requested maps for the box. Yields (fraction, message); returns a QAResult."""
    import time

    r, box = request, request.box_px
    virtual = _crop(r.virtual, box)
    yield 0.02, "reading the real stain"
    real = r.real
    if r.registration is not None:
        shape = r.virtual.shape[:2]
        real = r.registration.warp(real, shape, out_mpp=r.mpp, moving_mpp=r.real_mpp or r.mpp)
    real = _crop(real, box)
    steps = (
        list(r.kinds)
        + (["cycle"] if r.forward is not None else [])
        + (["disagreement"] if r.labels is not None else [])
    )
    maps, seconds = {}, {}
    backgrounds = (estimate_background(virtual), estimate_background(real))
    for i, step in enumerate(steps):
        yield 0.05 + 0.9 * i / len(steps), f"building {step}"
        t0 = time.perf_counter()
        if step == "cycle":
            source = _crop(r.source, box)
            recon = reconstruct(source, r.forward, r.backward)
            maps["cycle error (source - reconstruction)"] = (
                residual_map("rgb", source, recon),
                "rgb",
            )
            maps["cycle local SSIM"] = (residual_map("ssim", source, recon), "ssim")
        elif step == "disagreement":
            d = dab_disagreement(np.asarray(r.labels), virtual, real, r.mpp)
            maps["DAB disagreement"] = (d.layer, "disagreement")
            counts = d.to_dict()
        else:
            maps[f"{step} residual" if step != "ssim" else "local SSIM"] = (
                residual_map(step, virtual, real, backgrounds=backgrounds),
                step,
            )
        seconds[step] = time.perf_counter() - t0
    yield 0.97, "summarising"
    summary = summarise(virtual, real, mask=r.mask)
    if "disagreement" in steps:
        summary.update({f"nuclei_{k}": v for k, v in counts.items()})
    return QAResult(maps, summary, seconds, tuple(box), r.mpp)


def iter_lazy_qa(
    virtual_levels: list,
    real_levels: list,
    mpp: float,
    kinds: tuple[str, ...] = RESIDUAL_KINDS,
    registration=None,
    real_mpp: float | None = None,
    chunk_px: int = 512,
):
    """Whole-slide residual pyramids as lazy dask levels (computed as the viewer asks).

    Level ``i`` of each map is built from level ``i`` of the virtual pyramid (pixel size
    ``mpp * downsample``) and the real stain on the same grid: its own level ``i``, or with
    ``registration`` its finest level not finer than needed, warped lazily. Only the coarsest
    level is computed here (for the summary and display limits; it replaces the lazy one).
    Yields (fraction, message); returns a :class:`QAResult` whose maps hold lists of levels.
    """
    import time

    mpps = [mpp * virtual_levels[0].shape[0] / v.shape[0] for v in virtual_levels]
    if registration is not None:
        r0 = real_mpp or mpp
        r_mpps = [r0 * real_levels[0].shape[0] / r.shape[0] for r in real_levels]
        pick = [
            max((j for j, m in enumerate(r_mpps) if m <= out * 1.01), default=0) for out in mpps
        ]
        real_levels = [
            registration.warp(real_levels[j], v.shape[:2], out, r_mpps[j], chunk_px=chunk_px)
            for j, v, out in zip(pick, virtual_levels, mpps, strict=True)
        ]
    elif len(real_levels) < len(virtual_levels) or any(
        tuple(r.shape) != tuple(v.shape) for r, v in zip(real_levels, virtual_levels, strict=False)
    ):
        raise ValueError("real and virtual pyramids are not on one grid: register them first")
    coarse_v, coarse_r = np.asarray(virtual_levels[-1]), np.asarray(real_levels[-1])
    backgrounds = (estimate_background(coarse_v), estimate_background(coarse_r))
    maps, seconds = {}, {}
    for i, kind in enumerate(kinds):
        yield 0.05 + 0.9 * i / len(kinds), f"building the lazy {kind} pyramid"
        t0 = time.perf_counter()
        levels = [
            lazy_residual_map(kind, v, r, chunk_px=chunk_px, backgrounds=backgrounds)
            for v, r in zip(virtual_levels[:-1], real_levels, strict=False)
        ]
        levels.append(residual_map(kind, coarse_v, coarse_r, backgrounds=backgrounds))
        maps[f"{kind} residual" if kind != "ssim" else "local SSIM"] = (levels, kind)
        seconds[kind] = time.perf_counter() - t0
    summary = summarise(coarse_v, coarse_r)
    summary["summary_level_mpp"] = mpps[-1]
    h, w = virtual_levels[0].shape[:2]
    return QAResult(maps, summary, seconds, (0, 0, h, w), mpp)
