"""One output chunk of a lazily warped image (kept apart so dask can pickle it by name)."""

from __future__ import annotations

import numpy as np

MARGIN_PX = 2  # extra moving pixels read around a chunk's footprint, for interpolation


def warp_block(block, registration, moving, out_mpp, moving_mpp, order, cval, block_info=None):
    from scipy.ndimage import map_coordinates

    (y0, y1), (x0, x1) = block_info[0]["array-location"][:2]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    pts_um = np.stack([yy.ravel(), xx.ravel()], axis=1) * out_mpp
    src = registration.fixed_to_moving_um(pts_um) / moving_mpp
    out = np.full(block.shape, cval, dtype=moving.dtype)
    lo = np.floor(src.min(axis=0)).astype(int) - MARGIN_PX
    hi = np.ceil(src.max(axis=0)).astype(int) + MARGIN_PX + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, moving.shape[:2])
    if np.any(hi <= lo):  # the chunk maps entirely outside the moving image
        return out
    region = np.asarray(moving[lo[0] : hi[0], lo[1] : hi[1]])
    coords = (src - lo).T
    # points that land outside the read region lie outside the moving image: keep cval there
    inside = np.all((coords >= -0.5) & (coords <= (hi - lo)[:, None] - 0.5), axis=0)
    shape2 = block.shape[:2]
    channels = [region] if region.ndim == 2 else [region[..., c] for c in range(region.shape[2])]
    for c, plane in enumerate(channels):
        vals = map_coordinates(plane, coords, order=order, mode="nearest")
        vals = np.where(inside, vals, cval).reshape(shape2)
        if out.ndim == 2:
            out[:] = vals
        else:
            out[..., c] = vals
    return out
