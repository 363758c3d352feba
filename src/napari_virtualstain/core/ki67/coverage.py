"""Guards for RGBA images (the live virtual-stain overlay): measure only what is computed."""

from __future__ import annotations

import numpy as np

from ..roi import ROI


def opaque_pixels(view: np.ndarray, arr) -> np.ndarray:
    """The view's pixels as (N, 1, 3) without the not-computed ones of an RGBA overlay.

    The overlay's buffers are all-zero (transparent black) where no tile is computed; black
    would be taken for dense stain by the glass and stain estimates. RGB images pass unchanged.
    """
    if arr.shape[2] < 4:
        return view
    keep = view.reshape(-1, 3)
    keep = keep[keep.any(axis=1)]
    return keep[:, None, :] if len(keep) else view


def check_computed(arr, roi: ROI, mpp: float, side_px: int = 512) -> None:
    """Refuse an ROI where an RGBA image is transparent (a virtual stain not computed there).

    The live virtual-stain overlay is RGBA with alpha 0 where no tile is computed yet; its RGB
    there is black, which would be measured as dense stain.
    """
    if arr.shape[2] < 4:
        return
    y0, x0, y1, x1 = roi.bbox_px(mpp, arr.shape[:2]).corners
    step = max(1, int(np.ceil(max(y1 - y0, x1 - x0) / side_px)))
    alpha = np.asarray(arr[y0:y1:step, x0:x1:step, 3])
    mask = roi.mask(mpp * step, (y0 / step, x0 / step), alpha.shape)
    missing = float((alpha[mask] < 255).mean()) if mask.any() else 0.0
    if missing > 0.001:
        raise ValueError(
            f"ROI {roi.name!r}: {100 * missing:.1f} % of it is not computed (transparent) in "
            "this image; let the virtual stain fill the ROI, or save the whole-slide virtual "
            "stain and measure that"
        )
