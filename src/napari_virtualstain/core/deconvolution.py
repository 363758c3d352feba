"""Optical density and Ruifrok-Johnston colour deconvolution (H-DAB, H&E), with stain estimation.

Stain vectors are unit optical-density directions, one row per stain; the third row is a residual
vector computed as the normalised cross product of the first two when it is not given (as in
QuPath and scikit-image). Concentrations are optical densities (base 10) along each stain, so
QuPath's thresholds (for example 0.1 OD for nuclei, 0.2 OD for DAB positivity) apply directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Glass is rarely exactly 255; below this grey level a "background" estimate is tissue, not glass.
# Some scanners give grey glass (165 measured on a darkened scan): 150 keeps it, while uniformly
# dark tissue (an all-tissue tile) is still refused.
MIN_BACKGROUND_GREY = 150.0
# Pixels whose OD sum is below this are glass or faint tissue; Macenko's beta.
TISSUE_OD_MIN = 0.15
# Estimated vectors further than this from the reference stain are not trusted.
MAX_ESTIMATE_ANGLE_DEG = 30.0


@dataclass(frozen=True)
class StainVectors:
    """Three stain OD directions and their names.

    Attributes
    ----------
    name : str
        Where the vectors come from ("qupath_hdab", "skimage_hdab", "estimated_hdab", ...).
    stains : tuple of str
        Names of the three stains, for example ("hematoxylin", "dab", "residual").
    matrix : tuple of tuple of float
        (3, 3) rows = stain OD vectors in (R, G, B).
    notes : str
        How an estimate was obtained, or why a reference vector was kept.
    """

    name: str
    stains: tuple[str, str, str]
    matrix: tuple[tuple[float, float, float], ...]
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=float)
        if m.shape != (3, 3):
            raise ValueError(f"stain matrix must be 3x3, got shape {m.shape}")
        if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-6:
            raise ValueError(f"stain matrix {m.tolist()} is singular: two stains are parallel")
        if len(self.stains) != 3:
            raise ValueError(f"need three stain names, got {self.stains}")

    @classmethod
    def from_vectors(
        cls, name: str, stains: tuple[str, str], v1, v2, v3=None, notes: str = ""
    ) -> StainVectors:
        """Normalise two (or three) OD vectors; a missing third one becomes the residual."""
        v1, v2 = _unit(v1), _unit(v2)
        v3 = residual_vector(v1, v2) if v3 is None else _unit(v3)
        matrix = tuple(tuple(float(c) for c in v) for v in (v1, v2, v3))
        return cls(name, (stains[0], stains[1], "residual"), matrix, notes)

    @property
    def array(self) -> np.ndarray:
        """The (3, 3) float matrix, rows = stains."""
        return np.asarray(self.matrix, dtype=np.float64)

    def index(self, stain: str) -> int:
        """Position of ``stain`` ("hematoxylin", "dab", "eosin") in the matrix."""
        if stain not in self.stains:
            raise KeyError(f"stain {stain!r} not in {self.name} (has {self.stains})")
        return self.stains.index(stain)

    def to_dict(self) -> dict:
        """JSON-ready vectors, for provenance."""
        return {
            "name": self.name,
            **{s: [round(c, 4) for c in v] for s, v in zip(self.stains, self.matrix, strict=True)},
            "notes": self.notes,
        }


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    if v.shape != (3,) or n == 0:
        raise ValueError(f"a stain vector needs three non-zero OD values, got {v.tolist()}")
    return v / n


def residual_vector(v1, v2) -> np.ndarray:
    """The unit vector orthogonal to two stains, pointing into positive OD."""
    r = np.cross(_unit(v1), _unit(v2))
    return _unit(r if r.sum() >= 0 else -r)


QUPATH_HDAB = StainVectors.from_vectors(
    "qupath_hdab", ("hematoxylin", "dab"), (0.651, 0.701, 0.290), (0.269, 0.568, 0.778)
)
QUPATH_HE = StainVectors.from_vectors(
    "qupath_he", ("hematoxylin", "eosin"), (0.651, 0.701, 0.290), (0.216, 0.801, 0.558)
)


def _skimage_vectors(which: str) -> StainVectors:
    # skimage's matrices are used as they are (not renormalised) so results match rgb2hed.
    from skimage import color

    if which == "hdab":
        return StainVectors(
            "skimage_hdab",
            ("hematoxylin", "dab", "residual"),
            tuple(map(tuple, color.rgb_from_hdx.tolist())),
        )
    return StainVectors(
        "skimage_hed",
        ("hematoxylin", "eosin", "dab"),
        tuple(map(tuple, color.rgb_from_hed.tolist())),
    )


def get_stain_vectors(name: str) -> StainVectors:
    """Named reference vectors: "qupath" / "qupath_hdab", "qupath_he", "skimage" /
    "skimage_hdab", "skimage_hed"."""
    key = name.lower()
    if key in ("qupath", "qupath_hdab"):
        return QUPATH_HDAB
    if key == "qupath_he":
        return QUPATH_HE
    if key in ("skimage", "skimage_hdab"):
        return _skimage_vectors("hdab")
    if key == "skimage_hed":
        return _skimage_vectors("hed")
    raise ValueError(
        f"unknown stain vectors {name!r}; expected qupath, qupath_he, skimage, skimage_hed "
        "(or 'estimate', handled by resolve_stains)"
    )


def estimate_background(rgb: np.ndarray, quantile: float = 0.98) -> np.ndarray:
    """The white (glass) level per channel, read from the brightest pixels of the image.

    Returns the per-channel median of the pixels whose grey level is above ``quantile``. An image
    with no glass (all tissue) gives a dark estimate; then 255 is returned, because a tissue colour
    taken as "white" would make every stain vanish.
    """
    flat = np.asarray(rgb)[..., :3].reshape(-1, 3)
    if flat.size == 0:
        raise ValueError("cannot estimate the background of an empty image")
    step = max(1, flat.shape[0] // 500_000)  # a subsample is enough for a quantile
    flat = flat[::step].astype(np.float32)
    grey = flat.mean(axis=1)
    bright = flat[grey >= np.quantile(grey, quantile)]
    bg = np.median(bright, axis=0)
    if bg.mean() < MIN_BACKGROUND_GREY:
        return np.full(3, 255.0)
    return np.clip(bg, 1.0, 255.0)


def _od_luts(background) -> np.ndarray:
    """(3, 256) OD per channel and uint8 value: -log10(max(v, 1) / I0), clipped at 0."""
    bg = np.asarray(np.broadcast_to(background, (3,)), dtype=np.float64)
    # Clamp to 1 so black pixels get a large finite OD instead of infinity.
    values = np.maximum(np.arange(256, dtype=np.float64), 1.0)
    return np.maximum(-np.log10(values[None, :] / bg[:, None]), 0.0).astype(np.float32)


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB, got {rgb.dtype}")
    return rgb[..., :3]


def optical_density(rgb: np.ndarray, background=None) -> np.ndarray:
    """Per-channel base-10 optical density -log10(I / I0), float32, >= 0.

    ``background`` is I0 per channel; None estimates it from the image (glass is rarely 255).
    """
    rgb = _check_rgb(rgb)
    luts = _od_luts(estimate_background(rgb) if background is None else background)
    # A lookup per uint8 value is several times faster than a float log over every pixel.
    return np.stack([luts[c][rgb[..., c]] for c in range(3)], axis=-1)


def deconvolve(rgb: np.ndarray, stains: StainVectors, background=None) -> np.ndarray:
    """(H, W, 3) stain concentrations in OD units, one channel per row of ``stains``.

    Negative concentrations (noise, or pixels off the stain plane) are clipped to 0.
    """
    rgb = _check_rgb(rgb)
    bg = estimate_background(rgb) if background is None else background
    return np.stack([_concentration(rgb, stains, bg, k) for k in range(3)], axis=-1)


def _concentration(rgb: np.ndarray, stains: StainVectors, background, k: int) -> np.ndarray:
    # c_k = sum_c OD_c * inv[c, k]; folding inv into the per-channel LUTs avoids an (N, 3) matmul.
    luts = _od_luts(background) * np.linalg.inv(stains.array)[:, k, None].astype(np.float32)
    conc = luts[0][rgb[..., 0]]
    conc += luts[1][rgb[..., 1]]
    conc += luts[2][rgb[..., 2]]
    return np.maximum(conc, 0.0, out=conc)


def stain_channel(rgb: np.ndarray, stains: StainVectors, stain: str, background=None) -> np.ndarray:
    """A single stain's OD image, for example the hematoxylin channel for nucleus detection."""
    rgb = _check_rgb(rgb)
    bg = estimate_background(rgb) if background is None else background
    return _concentration(rgb, stains, bg, stains.index(stain))


def estimate_stain_vectors(
    rgb: np.ndarray,
    reference: StainVectors = QUPATH_HDAB,
    background=None,
    alpha_percentile: float = 1.0,
    max_pixels: int = 200_000,
    seed: int = 0,
) -> StainVectors:
    """Macenko-style estimate of the two stain vectors on tissue pixels.

    The OD of tissue pixels is projected on its two principal directions; the extreme angles
    (``alpha_percentile`` and 100 - it) give the two stains, matched to ``reference`` by cosine.
    A stain that is absent from the image (no DAB-positive cell) gives a vector far from its
    reference: that one keeps the reference value, and ``notes`` says so.
    """
    od = optical_density(rgb, background).reshape(-1, 3)
    tissue = od[(od.sum(axis=1) > TISSUE_OD_MIN) & (od.max(axis=1) < 3.0)]
    if tissue.shape[0] < 100:
        return _replace_notes(reference, "too few tissue pixels to estimate; reference kept")
    if tissue.shape[0] > max_pixels:
        idx = np.random.default_rng(seed).choice(tissue.shape[0], max_pixels, replace=False)
        tissue = tissue[idx]
    cands = [_unit(v) for v in macenko_extremes(tissue, alpha_percentile)]
    return _match_reference(cands, reference)


def macenko_extremes(tissue_od: np.ndarray, percentile: float = 1.0) -> list[np.ndarray]:
    """The two extreme OD directions (not normalised) of ``tissue_od`` (n, 3) in its stain plane:
    the ``percentile`` and 100 - ``percentile`` angles of the pixels projected on that plane."""
    # The two leading eigenvectors of the (uncentred) OD second moment span the stain plane; the
    # first points along the mean OD, so every pixel projects positively on it and the angles
    # below never wrap (a centred covariance can point between two stain clusters instead).
    _, eigvecs = np.linalg.eigh(tissue_od.T @ tissue_od / len(tissue_od))
    plane = eigvecs[:, [2, 1]]
    plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)
    proj = tissue_od @ plane
    angles = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(angles, [percentile, 100 - percentile])
    return [plane @ np.array([np.cos(a), np.sin(a)]) for a in (lo, hi)]


def _match_reference(cands: list[np.ndarray], reference: StainVectors) -> StainVectors:
    ref = reference.array[:2] / np.linalg.norm(reference.array[:2], axis=1, keepdims=True)
    straight = ref[0] @ cands[0] + ref[1] @ cands[1]
    crossed = ref[0] @ cands[1] + ref[1] @ cands[0]
    ordered = cands if straight >= crossed else cands[::-1]
    chosen, notes = [], []
    for stain, vec, r in zip(reference.stains[:2], ordered, ref, strict=True):
        angle = float(np.degrees(np.arccos(np.clip(vec @ r, -1.0, 1.0))))
        if angle > MAX_ESTIMATE_ANGLE_DEG:
            chosen.append(r)
            notes.append(f"{stain}: estimate {angle:.0f} deg from reference, reference kept")
        else:
            chosen.append(vec)
            notes.append(f"{stain}: estimated, {angle:.1f} deg from reference")
    name = reference.name.replace("qupath", "estimated").replace("skimage", "estimated")
    return StainVectors.from_vectors(
        name, reference.stains[:2], chosen[0], chosen[1], notes="; ".join(notes)
    )


def _replace_notes(vectors: StainVectors, notes: str) -> StainVectors:
    return StainVectors(vectors.name, vectors.stains, vectors.matrix, notes)


def resolve_stains(choice: str | StainVectors, rgb: np.ndarray | None = None, he: bool = False):
    """Turn a user choice ("qupath", "skimage", "estimate" or vectors) into ``StainVectors``.

    ``he`` selects the H&E family instead of H-DAB. "estimate" needs ``rgb``.
    """
    if isinstance(choice, StainVectors):
        return choice
    if choice == "estimate":
        if rgb is None:
            raise ValueError("stain estimation needs the image")
        return estimate_stain_vectors(rgb, QUPATH_HE if he else QUPATH_HDAB)
    if he:
        return get_stain_vectors(
            {"qupath": "qupath_he", "skimage": "skimage_hed"}.get(choice, choice)
        )
    return get_stain_vectors(choice)
