"""Does an image look like H-DAB? A guard against measuring eosin, grey or foreign stains as DAB.

A Ki-67 ratio is only meaningful on hematoxylin + DAB. Colour deconvolution always returns a
"DAB" channel, whatever the stain: on H&E the eosin of the stroma comes out as DAB, and CMU-1 (an
H&E slide) once got a 93 % labelling index. ``check_hdab`` looks at the tissue pixels' optical
density and refuses:

- **greyscale** images: with no colour, hematoxylin and DAB cannot be told apart;
- **eosin** (H&E): eosin is pink, it absorbs green more than DAB does. Two signs are measured,
  either one refuses: the share of tissue pixels that lie on the eosin side of the H-DAB plane
  (OD along the H-DAB residual vector below ``-EOSIN_RESIDUAL_OD``), and whether the second stain
  that a Macenko fit finds on the image (the hematoxylin one is the first) points closer to eosin
  than to DAB;
- images where the H-DAB model leaves **most of the optical density unexplained** (a special
  stain, fluorescence, a colour cast): the OD left over once non-negative hematoxylin and DAB
  are fitted, as a share of all tissue OD.

Thresholds were set on the bundled samples and the shared EndoNuke (IHC), DSB 2018 (H&E and
hematoxylin-only) and TCGA tiles; see docs/ki67.md for the figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..deconvolution import (
    QUPATH_HDAB,
    QUPATH_HE,
    TISSUE_OD_MIN,
    estimate_background,
    macenko_extremes,
    optical_density,
)

# A pixel whose OD direction leans this far (per unit OD) to the green-absorbing side of the
# H-DAB plane is eosin-like. Pure hematoxylin and DAB lean 0.
EOSIN_RESIDUAL_OD = 0.1
# Share of tissue pixels that may be eosin-like before the image counts as H&E. Measured: H-DAB
# 0.00-0.01, hematoxylin-only 0.03-0.09; H&E 0.16-0.99 (the low end also fails the Macenko test).
MAX_EOSIN_PIXEL_FRACTION = 0.3
# Below this median angle (degrees) between a tissue pixel's OD and the grey axis, there is no
# colour to deconvolve. H-DAB and H&E tissue sit at 9-27 degrees.
MIN_CHROMA_DEG = 3.0
# Share of tissue OD (squared norm) that non-negative H + DAB may leave unexplained. Measured:
# H-DAB <= 0.02, H&E <= 0.10. "Most of the signal" would be 0.5; 0.3 refuses earlier.
MAX_UNEXPLAINED_FRACTION = 0.3
# Fewer tissue pixels than this: nothing to check, the image is passed with a note.
MIN_TISSUE_PIXELS = 500
MAX_CHECK_PIXELS = 250_000
UNVERIFIED = "stain not verified"


@dataclass(frozen=True)
class StainCheck:
    """The verdict on one image, with the measurements behind it.

    Attributes
    ----------
    ok : bool
        The image looks like hematoxylin + DAB (or has too little tissue to tell).
    reason : str
        Why it was refused, or a note when it was passed without a full check; "" otherwise.
    tissue_pixels : int
        Tissue pixels looked at (OD sum above ``TISSUE_OD_MIN``, subsampled).
    chroma_deg : float
        Median angle between the tissue OD and the grey axis.
    eosin_pixel_fraction : float
        Share of tissue pixels on the eosin side of the H-DAB plane.
    second_stain_to_dab_deg, second_stain_to_eosin_deg : float
        Angles from the Macenko second stain to the DAB and the eosin reference vectors.
    unexplained_fraction : float
        Share of the tissue OD that non-negative hematoxylin + DAB leave unexplained.
    forced : bool
        Measured although refused (``--force``): results carry ``UNVERIFIED``.
    """

    ok: bool
    reason: str
    tissue_pixels: int
    chroma_deg: float = float("nan")
    eosin_pixel_fraction: float = float("nan")
    second_stain_to_dab_deg: float = float("nan")
    second_stain_to_eosin_deg: float = float("nan")
    unexplained_fraction: float = float("nan")
    forced: bool = False

    @property
    def verified(self) -> bool:
        """True when the image passed the check (a forced measurement is not verified)."""
        return self.ok and not self.forced

    def to_dict(self) -> dict:
        """JSON-ready (NaN becomes None), for provenance."""
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in asdict(self).items()
        } | {"verified": self.verified}

    def as_forced(self) -> StainCheck:
        """The same verdict, measured anyway."""
        from dataclasses import replace

        return replace(self, forced=True)


class StainCheckError(ValueError):
    """The image does not look like H-DAB; ``check`` says why."""

    def __init__(self, check: StainCheck, what: str = "the image") -> None:
        self.check = check
        super().__init__(
            f"{what} does not look like hematoxylin + DAB: {check.reason}. "
            f"Measure anyway with --force / 'Measure anyway' (results marked '{UNVERIFIED}')"
        )


def check_hdab(rgb, background=None) -> StainCheck:
    """Whether ``rgb`` (an (H, W, 3) uint8 view, e.g. the slide overview) looks like H-DAB.

    ``background`` is the glass level (estimated from ``rgb`` when None).
    """
    rgb = np.asarray(rgb)
    bg = estimate_background(rgb) if background is None else background
    # A strided view is plenty for shares and angles (and keeps the check well under a second).
    step = max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / MAX_CHECK_PIXELS))))
    od = optical_density(rgb[::step, ::step], bg).reshape(-1, 3).astype(np.float64)
    tissue = od[(od.sum(axis=1) > TISSUE_OD_MIN) & (od.max(axis=1) < 3.0)]
    if tissue.shape[0] < MIN_TISSUE_PIXELS:
        return StainCheck(True, "too little tissue to check the stain", int(tissue.shape[0]))
    norm = np.linalg.norm(tissue, axis=1)
    grey_cos = tissue.sum(axis=1) / np.sqrt(3.0) / norm
    chroma = float(np.degrees(np.median(np.arccos(np.clip(grey_cos, -1.0, 1.0)))))
    n = int(tissue.shape[0])
    if chroma < MIN_CHROMA_DEG:
        return StainCheck(
            False,
            f"greyscale (the tissue colour is {chroma:.1f}° from grey, below "
            f"{MIN_CHROMA_DEG:.0f}°): hematoxylin and DAB cannot be separated",
            n,
            chroma,
        )
    hdab = QUPATH_HDAB.array
    residual = tissue @ hdab[2] / norm
    eosin_frac = float(np.mean(residual < -EOSIN_RESIDUAL_OD))
    to_dab, to_eosin = _second_stain_angles(tissue)
    conc = np.clip(tissue @ np.linalg.inv(hdab), 0.0, None)[:, :2]
    left = tissue - conc @ hdab[:2]
    unexplained = float((left**2).sum() / (norm**2).sum())
    measures = dict(
        tissue_pixels=n,
        chroma_deg=chroma,
        eosin_pixel_fraction=eosin_frac,
        second_stain_to_dab_deg=to_dab,
        second_stain_to_eosin_deg=to_eosin,
        unexplained_fraction=unexplained,
    )
    if eosin_frac > MAX_EOSIN_PIXEL_FRACTION:
        reason = (
            f"eosin (H&E?): {100 * eosin_frac:.0f} % of the tissue pixels are pink, "
            f"more than {100 * MAX_EOSIN_PIXEL_FRACTION:.0f} %"
        )
    elif to_eosin < to_dab:
        reason = (
            f"eosin (H&E?): the second stain is {to_eosin:.0f}° from eosin and {to_dab:.0f}° "
            "from DAB"
        )
    elif unexplained > MAX_UNEXPLAINED_FRACTION:
        reason = (
            f"hematoxylin + DAB leave {100 * unexplained:.0f} % of the optical density "
            f"unexplained (more than {100 * MAX_UNEXPLAINED_FRACTION:.0f} %): another stain?"
        )
    else:
        return StainCheck(True, "", **measures)
    return StainCheck(False, reason, **measures)


def _second_stain_angles(tissue: np.ndarray, percentile: float = 1.0) -> tuple[float, float]:
    """Angles (degrees) from the non-hematoxylin Macenko direction to DAB and to eosin."""
    ends = macenko_extremes(tissue, percentile)
    hema = QUPATH_HDAB.array[0]
    # The end farther from hematoxylin is the second stain.
    other = max(ends, key=lambda v: _angle(v, hema))
    return _angle(other, QUPATH_HDAB.array[1]), _angle(other, QUPATH_HE.array[1])


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
