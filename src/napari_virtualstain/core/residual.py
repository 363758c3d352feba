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


def split_alpha(img) -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB, valid) of a (y, x, 3) or (y, x, 4) uint8 image; ``valid`` is None without alpha.

    An RGBA image (the plugin's own virtual-stain overlay) is missing where alpha is 0: tiles
    not computed yet. Residuals are NaN there and summaries leave those pixels out.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise ValueError(
            f"image must be (y, x, 3) or (y, x, 4) uint8, found {img.shape} {img.dtype}"
        )
    if img.shape[2] == 3:
        return img, None
    return np.ascontiguousarray(img[..., :3]), img[..., 3] > 0


def _check_rgb_pair(a, b) -> None:
    for name, img in (("first", a), ("second", b)):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"{name} image must be (y, x, 3) uint8, found {img.shape} {img.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape[:2]} vs {b.shape[:2]}")


def _valid_of(va, vb) -> np.ndarray | None:
    if va is None:
        return vb
    return va if vb is None else va & vb


def residual_map(
    kind: str,
    a: np.ndarray,
    b: np.ndarray,
    stains: StainVectors = QUPATH_HDAB,
    backgrounds: tuple | None = None,
) -> np.ndarray:
    """One residual map of two (y, x, 3) uint8 images; see the module doc for ``kind``.

    ``backgrounds`` are the glass RGB levels of ``a`` and ``b``; pass them when tiling, so every
    tile uses the same ones (None estimates them from these pixels). An RGBA image is missing
    where its alpha is 0: the map is NaN there.
    """
    if kind not in RESIDUAL_KINDS:
        raise ValueError(f"kind must be one of {RESIDUAL_KINDS}, got {kind!r}")
    (a, va), (b, vb) = split_alpha(a), split_alpha(b)
    _check_rgb_pair(a, b)
    out = _residual(kind, a, b, stains, backgrounds)
    valid = _valid_of(va, vb)
    if valid is not None:
        out = np.where(valid, out, np.float32(np.nan)).astype(np.float32)
    return out


def _residual(kind, a, b, stains, backgrounds) -> np.ndarray:
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
    return estimate_background(np.asarray(image[::step, ::step, :3]))


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

    if tuple(a.shape[:2]) != tuple(b.shape[:2]):
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    if kind not in RESIDUAL_KINDS:
        raise ValueError(f"kind must be one of {RESIDUAL_KINDS}, got {kind!r}")
    if kind in ("od", "dab", "hematoxylin") and backgrounds is None:
        backgrounds = (sample_background(a), sample_background(b))
    a = da.asarray(a).rechunk((chunk_px, chunk_px, a.shape[2]))
    b = da.asarray(b).rechunk((chunk_px, chunk_px, b.shape[2]))

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
        from .engine.tiling import resize_rgb

        # without a stated pixel size the image is taken to be at the model's own resolution
        run_mpp = mpp if mpp is not None else model.card.mpp

        def run_model(rgb: np.ndarray) -> np.ndarray:
            out = stain_image(model, rgb, mpp=run_mpp)
            # the engine works at the model's µm/px: bring the result back onto the input grid
            return out if out.shape == rgb.shape else resize_rgb(out, rgb.shape[:2])

        return run_model
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


def reconstruct(source: np.ndarray, forward, backward, mpp: float | None = None) -> np.ndarray:
    """``G_back(G_fwd(source))`` of a (y, x, 3) uint8 region of pixel size ``mpp``.

    Models run at their own µm/px (``mpp`` None: the region is taken to be at it); the
    reconstruction is returned on the source's grid.
    """
    fwd, back = as_rgb_function(forward, mpp), as_rgb_function(backward, mpp)
    out = back(fwd(np.asarray(source)))
    if out.shape != source.shape or out.dtype != np.uint8:
        raise ValueError(
            f"the generator pair returned {out.shape} {out.dtype} for a {source.shape} uint8 input"
        )
    return out


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
    (a, _), (b, _) = split_alpha(a), split_alpha(b)
    _check_rgb_pair(a, b)
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
    region given, because windows need whole neighbourhoods. Pixels missing from an RGBA image
    (alpha 0) are left out of the means; ``missing_fraction`` says how many there were.
    """
    from .metrics.image import mae, psnr, ssim

    (a, va), (b, vb) = split_alpha(a), split_alpha(b)
    _check_rgb_pair(a, b)
    sel = np.ones(a.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    if sel.shape != a.shape[:2] or not sel.any():
        raise ValueError(f"mask must be a non-empty {a.shape[:2]} boolean image")
    valid = _valid_of(va, vb)
    n_region = int(sel.sum())
    if valid is not None:
        sel = sel & valid
        if not sel.any():
            raise ValueError(
                "no computed virtual-stain pixels in this region (the overlay is transparent "
                "there): let the overlay fill the view first"
            )
    backgrounds = (estimate_background(a), estimate_background(b))
    out = {
        f"mean_abs_{k}": float(np.abs(residual_map(k, a, b, stains, backgrounds)[sel]).mean())
        for k in ("rgb", "od", "dab", "hematoxylin")
    }
    out["ssim"] = ssim(a, b) if min(a.shape[:2]) >= WINDOW_PX else float("nan")
    out["psnr_db"] = psnr(a, b)
    out["mae"] = mae(a[sel], b[sel])
    out["missing_fraction"] = 1.0 - float(sel.sum()) / n_region
    return out
