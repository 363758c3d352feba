"""Estimate a :class:`Registration` between adjacent sections.

1. Tissue signal: the smoothed maximum optical density, which both H&E and IHC share (nuclei and
   tissue outline), zero outside the tissue mask.
2. Coarse rigid search at ``coarse_side_px``: every rotation step, with and without a mirror
   flip; translation by phase correlation; candidates ranked by normalised cross-correlation.
3. Affine refinement at ``refine_side_px``: six parameters maximise the correlation (Powell).
4. Optional non-rigid part: optical flow between the fixed signal and the affinely warped moving
   signal, Gaussian-smoothed, stored on a coarse grid.
A final correlation below ``min_score`` or too little tissue overlap raises
:class:`RegistrationError` with the score, never a silently wrong transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..progress import Progress, ProgressGenerator
from .transform import Registration

# a candidate must cover at least this fraction of the fixed tissue to be scored
MIN_FOOTPRINT_TISSUE = 0.3
# Powell evaluations of the affine refinement (each warps one refine-level image)
MAX_REFINE_EVALS = 400
# NCC gain the non-rigid field must bring to be kept
MIN_FIELD_GAIN = 0.005


class RegistrationError(ValueError):
    """Registration failed; the message carries the match score and what to check."""


@dataclass(frozen=True)
class RegistrationConfig:
    """Settings of :func:`iter_register`; sizes in pixels of the working images."""

    coarse_side_px: int = 192
    refine_side_px: int = 512
    angle_step_deg: float = 3.0
    allow_flips: bool = True
    nonrigid: bool = True
    field_smooth_um: float = 0.0  # 0 = 8 refine-level pixels
    min_score: float = 0.5
    min_overlap: float = 0.3
    n_candidates: int = 4

    def __post_init__(self) -> None:
        if not 32 <= self.coarse_side_px <= self.refine_side_px:
            raise ValueError("need 32 <= coarse_side_px <= refine_side_px")
        if not 0 < self.angle_step_deg <= 45:
            raise ValueError(f"angle_step_deg must be in (0, 45], got {self.angle_step_deg}")
        if not -1 <= self.min_score <= 1 or not 0 <= self.min_overlap <= 1:
            raise ValueError("min_score must be in [-1, 1] and min_overlap in [0, 1]")


def tissue_signal_image(rgb: np.ndarray, sigma_px: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(signal, mask): smoothed max OD, zeroed outside the tissue mask, and the mask."""
    from ..engine.tissue import TissueConfig, tissue_mask, tissue_signal

    signal = ndi.gaussian_filter(tissue_signal(rgb, "od"), sigma_px)
    mask = tissue_mask(rgb, TissueConfig(method="od", min_threshold=0.05, min_object_px=4))
    return np.where(mask, signal, 0.0).astype(np.float32), mask


def _resample(rgb: np.ndarray, factor: float) -> np.ndarray:
    from skimage.transform import rescale

    if abs(factor - 1.0) < 1e-6:
        return np.asarray(rgb)
    out = rescale(
        np.asarray(rgb), factor, channel_axis=-1, anti_aliasing=factor < 1, preserve_range=True
    )
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _ncc(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> float:
    w = weight.sum()
    if w < 16:
        return -1.0
    ma, mb = (a * weight).sum() / w, (b * weight).sum() / w
    da, db = (a - ma) * weight, (b - mb) * weight
    denom = np.sqrt((da * da).sum() * (db * db).sum())
    return float((da * db).sum() / denom) if denom > 0 else -1.0


def _footprint_ncc(fixed, moving, m_px, fixed_mask) -> float:
    """NCC where the warped moving image has data; -1 if that misses most of the fixed tissue.

    Outside its footprint the warped image is empty, which would penalise the right answer
    whenever the sections are cut differently, so only the footprint is compared.
    """
    foot = _warp_affine(np.ones(moving.shape, np.float32), m_px, fixed.shape, order=0) > 0.5
    if (foot & fixed_mask).sum() < MIN_FOOTPRINT_TISSUE * max(1, fixed_mask.sum()):
        return -1.0
    return _ncc(fixed, _warp_affine(moving, m_px, fixed.shape), foot)


def _warp_affine(img: np.ndarray, m_px: np.ndarray, shape: tuple[int, int], order=1) -> np.ndarray:
    # m_px maps output (fixed) pixel (y, x, 1) to input (moving) pixel
    return ndi.affine_transform(img, m_px, output_shape=shape, order=order, cval=0.0)


def _rigid_matrix(angle_rad: float, flip: bool, fixed_centre, moving_centre) -> np.ndarray:
    """Fixed px -> moving px: ``p_m = R (p_f - c_f) + c_m``, R a rotation (after a flip of x)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    r = np.array([[c, -s], [s, c]]) @ (np.diag([1.0, -1.0]) if flip else np.eye(2))
    m = np.eye(3)
    m[:2, :2] = r
    m[:2, 2] = moving_centre - r @ fixed_centre
    return m


def _phase_shift(fixed: np.ndarray, moving_warped: np.ndarray, win: np.ndarray) -> np.ndarray:
    from skimage.registration import phase_cross_correlation

    # demeaned and windowed: otherwise the tissue outline's DC and the image edges dominate
    a = (fixed - fixed.mean()) * win
    b = (moving_warped - moving_warped.mean()) * win
    shift, _, _ = phase_cross_correlation(a, b, normalization="phase")
    return -np.asarray(shift)  # the (y, x) to add to fixed coordinates to land on the moving one


def _coarse_search(fixed, moving, fixed_mask, config: RegistrationConfig) -> list:
    """Rigid candidates (NCC, fixed px -> moving px matrix), best first, one per rotation peak.

    Each rotation step (with and without a mirror flip) gets its translation from phase
    correlation and is scored by the footprint NCC.
    """
    from skimage.filters import window

    shape = fixed.shape
    moving_centre = (np.asarray(moving.shape) - 1) / 2.0
    fixed_centre = (np.asarray(shape) - 1) / 2.0
    win = window("hann", shape)
    flips = (False, True) if config.allow_flips else (False,)
    found = []
    for flip in flips:
        for angle in np.arange(0.0, 360.0, config.angle_step_deg):
            # rotate about the centres, which start on top of each other
            m = _rigid_matrix(np.deg2rad(angle), flip, fixed_centre, moving_centre)
            t = np.eye(3)
            t[:2, 2] = _phase_shift(fixed, _warp_affine(moving, m, shape), win)
            found.append((_footprint_ncc(fixed, moving, m @ t, fixed_mask), flip, angle, m @ t))
    found.sort(key=lambda c: -c[0])
    picked = []
    for score, flip, angle, m in found:
        # neighbouring angles of one peak are one candidate
        if all(
            f != flip or abs((angle - a + 180) % 360 - 180) > 2 * config.angle_step_deg
            for _, f, a, _ in picked
        ):
            picked.append((score, flip, angle, m))
        if len(picked) == config.n_candidates:
            break
    return [(score, m) for score, _, _, m in picked]


def _best_candidate(fixed, moving, fixed_mask, candidates_px: list) -> tuple[np.ndarray, float]:
    """Re-fit each candidate's translation at this (finer) level and keep the best NCC."""
    from skimage.filters import window

    win = window("hann", fixed.shape)
    best = (-2.0, None)
    for m in candidates_px:
        t = np.eye(3)
        t[:2, 2] = _phase_shift(fixed, _warp_affine(moving, m, fixed.shape), win)
        for cand in (m, m @ t):
            score = _footprint_ncc(fixed, moving, cand, fixed_mask)
            if score > best[0]:
                best = (score, cand)
    return best[1], best[0]


def _refine_affine(fixed, moving, fixed_mask, m0: np.ndarray) -> tuple[np.ndarray, float]:
    """Six affine parameters maximising NCC (Powell), starting from ``m0``."""
    from scipy.optimize import minimize

    # the footprint barely moves during refinement: fix it (eroded) to halve the cost
    foot = _warp_affine(np.ones(moving.shape, np.float32), m0, fixed.shape, order=0) > 0.5
    foot = ndi.binary_erosion(foot, iterations=4)
    if (foot & fixed_mask).sum() < MIN_FOOTPRINT_TISSUE * max(1, fixed_mask.sum()):
        return m0, -1.0
    scale = np.array([0.01, 0.01, 1.0, 0.01, 0.01, 1.0])  # params of similar effect per unit

    def matrix(p):
        m = m0.copy()
        m[:2, :] += (p * scale).reshape(2, 3)
        return m

    def cost(p):
        return -_ncc(fixed, _warp_affine(moving, matrix(p), fixed.shape), foot)

    res = minimize(
        cost,
        np.zeros(6),
        method="Powell",
        options={"xtol": 0.05, "ftol": 1e-4, "maxfev": MAX_REFINE_EVALS},
    )
    m = matrix(res.x)
    return m, _footprint_ncc(fixed, moving, m, fixed_mask)


def _flow_field(fixed, warped, smooth_px: float, step_px: int) -> np.ndarray:
    from skimage.registration import optical_flow_tvl1

    flow = optical_flow_tvl1(fixed, warped, attachment=10.0, num_warp=5)
    flow = np.stack([ndi.gaussian_filter(f, smooth_px) for f in flow])
    return flow[:, ::step_px, ::step_px]


def _scaled(m_px: np.ndarray, out_mpp: float, in_mpp: float) -> np.ndarray:
    """A pixel matrix (out px -> in px) as µm -> µm."""
    return np.diag([in_mpp, in_mpp, 1.0]) @ m_px @ np.diag([1 / out_mpp, 1 / out_mpp, 1.0])


def iter_register(
    fixed_rgb: np.ndarray,
    moving_rgb: np.ndarray,
    fixed_mpp: float,
    moving_mpp: float,
    config: RegistrationConfig | None = None,
    fixed_level0: tuple[float, tuple[int, int]] | None = None,
    moving_level0: tuple[float, tuple[int, int]] | None = None,
) -> ProgressGenerator[Registration]:
    """Register two RGB images (any level; ``*_mpp`` is their own pixel size).

    Yields ``core.progress.Progress`` (percent done); returns the :class:`Registration`. Stop
    iterating to cancel. ``*_level0`` give (mpp, (y, x) size) of level 0 when the images are coarser levels.
    """
    config = config or RegistrationConfig()
    for name, img in (("fixed", fixed_rgb), ("moving", moving_rgb)):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"{name} image must be (y, x, 3) uint8, found {img.shape} {img.dtype}")
    # one working pixel size for both, set by the larger physical extent
    extent_um = max(max(fixed_rgb.shape[:2]) * fixed_mpp, max(moving_rgb.shape[:2]) * moving_mpp)
    results = {}
    for stage, side in (("coarse", config.coarse_side_px), ("refine", config.refine_side_px)):
        work_mpp = max(extent_um / side, fixed_mpp, moving_mpp)
        f_sig, f_mask = tissue_signal_image(_resample(fixed_rgb, fixed_mpp / work_mpp))
        m_sig, m_mask = tissue_signal_image(_resample(moving_rgb, moving_mpp / work_mpp))
        for name, mask in (("fixed", f_mask), ("moving", m_mask)):
            if mask.mean() < 0.002:
                raise RegistrationError(f"no tissue found in the {name} image ({stage} level)")
        results[stage] = (work_mpp, f_sig, m_sig, f_mask, m_mask)
    yield Progress(10, 100, "tissue signals ready")
    c_mpp, f_sig, m_sig, f_mask, _ = results["coarse"]
    candidates = _coarse_search(f_sig, m_sig, f_mask, config)
    coarse_score = candidates[0][0]
    yield Progress(40, 100, f"coarse rigid search, best NCC {coarse_score:.3f}")
    r_mpp, f_sig, m_sig, f_mask, m_mask = results["refine"]
    to_refine = np.diag([r_mpp, r_mpp, 1.0])
    rescale = np.linalg.inv(to_refine) @ np.diag([c_mpp, c_mpp, 1.0])  # coarse px -> refine px
    m_ref0, pick_score = _best_candidate(
        f_sig, m_sig, f_mask, [rescale @ m @ np.linalg.inv(rescale) for _, m in candidates]
    )
    yield Progress(50, 100, f"rigid candidate picked, NCC {pick_score:.3f}")
    m_ref, score = _refine_affine(f_sig, m_sig, f_mask, m_ref0)
    yield Progress(70, 100, f"affine refined, NCC {score:.3f}")
    warped_mask = _warp_affine(m_mask.astype(np.float32), m_ref, f_sig.shape, order=0) > 0.5
    overlap = (warped_mask & f_mask).sum() / max(1, min(warped_mask.sum(), f_mask.sum()))
    if score < config.min_score or overlap < config.min_overlap:
        raise RegistrationError(
            f"registration failed: match score (NCC) {score:.3f} (minimum {config.min_score}), "
            f"tissue overlap {overlap:.2f} (minimum {config.min_overlap}). Are these adjacent "
            "sections of the same block, with tissue in both images?"
        )
    field_kw = {}
    notes = f"coarse NCC {coarse_score:.3f} at {c_mpp:.2f} µm/px; affine NCC {score:.3f}"
    if config.nonrigid:
        warped = _warp_affine(m_sig, m_ref, f_sig.shape)
        # a stiff field: it corrects section warping, and cannot paint one image into another
        smooth_px = config.field_smooth_um / r_mpp if config.field_smooth_um > 0 else 8.0
        step_px = max(1, int(round(smooth_px / 2)))
        flow_px = _flow_field(f_sig, warped, smooth_px, step_px)
        foot = _warp_affine(np.ones(m_sig.shape, np.float32), m_ref, f_sig.shape, order=0) > 0.5
        nonrigid_score = _ncc(f_sig, _apply_flow(warped, flow_px, step_px), foot)
        # keep the field only if it clearly helps: an affine pair then stays exactly affine
        if nonrigid_score > score + MIN_FIELD_GAIN:
            field_kw = dict(
                field_spacing_um=step_px * r_mpp,
                displacement_um=(flow_px * r_mpp).astype(np.float32),
            )
            notes += f"; non-rigid NCC {nonrigid_score:.3f}"
            score = nonrigid_score
        yield Progress(95, 100, f"non-rigid field, NCC {nonrigid_score:.3f}")
    return Registration(
        matrix_um=tuple(map(tuple, _scaled(m_ref, r_mpp, r_mpp).tolist())),
        fixed_mpp=float(fixed_level0[0]) if fixed_level0 else float(fixed_mpp),
        moving_mpp=float(moving_level0[0]) if moving_level0 else float(moving_mpp),
        fixed_shape_px=tuple(fixed_level0[1]) if fixed_level0 else fixed_rgb.shape[:2],
        moving_shape_px=tuple(moving_level0[1]) if moving_level0 else moving_rgb.shape[:2],
        score=float(score),
        notes=notes,
        **field_kw,
    )


def _apply_flow(img: np.ndarray, flow_grid: np.ndarray, step_px: int) -> np.ndarray:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]].astype(np.float64)
    dy = ndi.map_coordinates(flow_grid[0], [yy / step_px, xx / step_px], order=1, mode="nearest")
    dx = ndi.map_coordinates(flow_grid[1], [yy / step_px, xx / step_px], order=1, mode="nearest")
    return ndi.map_coordinates(img, [yy + dy, xx + dx], order=1, cval=0.0)
