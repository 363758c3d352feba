"""The hot spot: the square window of an ROI with the highest Ki-67 labelling index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .measure import Nuclei


@dataclass(frozen=True)
class Hotspot:
    """The square window with the highest labelling index (µm, level-0 (y, x) top-left)."""

    y_um: float
    x_um: float
    size_um: float
    n_nuclei: int
    n_positive: int
    labelling_index: float

    def to_roi(self, name: str = "hot spot"):
        """The window as an ROI, to measure or draw."""
        from ..roi import ROI

        return ROI.rectangle(name, self.y_um, self.x_um, self.size_um, self.size_um)


def find_hotspot(
    nuclei: Nuclei,
    size_um: float,
    mpp: float,
    region_mask: np.ndarray | None = None,
    mask_origin_px: tuple[int, int] = (0, 0),
    min_nuclei: int = 20,
    steps_per_window: int = 4,
    mask_downsample: float = 1.0,
) -> Hotspot | None:
    """Search square windows of ``size_um`` for the highest labelling index.

    Windows move in steps of ``size_um / steps_per_window``. With ``region_mask`` (level-0
    pixels from ``mask_origin_px``, e.g. an ROI mask or a tissue mask), only windows at least
    90 % inside it count; without it, windows cover the nuclei's extent. Windows with fewer than
    ``min_nuclei`` nuclei are skipped. Returns None when no window qualifies.
    ``mask_downsample``: one mask pixel covers that many level-0 pixels per side (a coarse
    mask is plenty, and a whole-slide ROI's full-resolution mask would not fit in memory).
    """
    if size_um <= 0 or mpp <= 0:
        raise ValueError(f"size_um and mpp must be > 0, got {size_um}, {mpp}")
    if len(nuclei) == 0:
        return None
    cell_px = size_um / mpp / steps_per_window
    if region_mask is not None:
        oy, ox = mask_origin_px
        y0, x0 = oy, ox
        shape = np.asarray(region_mask.shape, float) * mask_downsample
    else:
        y0, x0 = float(nuclei.y.min()), float(nuclei.x.min())
        shape = np.array([nuclei.y.max() - y0 + 1, nuclei.x.max() - x0 + 1])
    grid = np.maximum(np.ceil(shape / cell_px).astype(int), steps_per_window)
    gy = np.clip(((nuclei.y - y0) / cell_px).astype(int), 0, grid[0] - 1)
    gx = np.clip(((nuclei.x - x0) / cell_px).astype(int), 0, grid[1] - 1)
    total = np.zeros(grid, float)
    pos = np.zeros(grid, float)
    np.add.at(total, (gy, gx), 1)
    np.add.at(pos, (gy, gx), nuclei.positive.astype(float))
    k = steps_per_window
    win_total, win_pos = _window_sum(total, k), _window_sum(pos, k)
    ok = win_total >= max(1, min_nuclei)
    if region_mask is not None:
        inside = _cell_fraction(region_mask, cell_px / mask_downsample, grid)
        ok &= _window_sum(inside, k) / (k * k) >= 0.9
    if not ok.any():
        return None
    li = np.where(ok, win_pos / np.maximum(win_total, 1), -1.0)
    # Highest index first; among equals, the window with more nuclei.
    best = np.unravel_index(np.lexsort((win_total.ravel(), li.ravel()))[-1], li.shape)
    return Hotspot(
        y_um=(y0 + best[0] * cell_px) * mpp,
        x_um=(x0 + best[1] * cell_px) * mpp,
        size_um=size_um,
        n_nuclei=int(win_total[best]),
        n_positive=int(win_pos[best]),
        labelling_index=float(li[best]),
    )


def _window_sum(grid: np.ndarray, k: int) -> np.ndarray:
    """Sums over every k x k window (valid positions only), via an integral image."""
    s = np.pad(grid, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]


def _cell_fraction(mask: np.ndarray, cell_px: float, grid) -> np.ndarray:
    """Fraction of each grid cell covered by ``mask`` (cells beyond the mask count as outside)."""
    ys = np.minimum((np.arange(mask.shape[0]) / cell_px).astype(int), grid[0] - 1)
    xs = np.minimum((np.arange(mask.shape[1]) / cell_px).astype(int), grid[1] - 1)
    cover = np.zeros(grid, float)
    np.add.at(cover, (ys[:, None], xs[None, :]), mask.astype(float))
    return cover / (cell_px * cell_px)


def find_run_hotspot(
    run, size_um: float, min_nuclei: int = 20, steps_per_window: int = 4
) -> Hotspot | None:
    """The window of highest labelling index over all ROIs of a ``RatioRun``.

    Each ROI is searched inside its own outline (windows at least 90 % inside it), whether or
    not it kept a label image; the best window wins (more nuclei break ties).
    """
    best = None
    cell_px = size_um / run.mpp / steps_per_window
    down = max(1.0, cell_px / 8.0)  # 8 x 8 mask pixels per grid cell
    for m in run.measurements:
        y0, x0 = m.origin_px
        if m.labels is not None:
            y1, x1 = y0 + m.labels.shape[0], x0 + m.labels.shape[1]
        else:
            box = m.roi.bbox_px(run.mpp)
            y1, x1 = box.y1, box.x1
        shape = (max(1, int(np.ceil((y1 - y0) / down))), max(1, int(np.ceil((x1 - x0) / down))))
        mask = m.roi.mask(run.mpp * down, (y0 / down, x0 / down), shape)
        spot = find_hotspot(
            m.nuclei, size_um, run.mpp, mask, (y0, x0), min_nuclei, steps_per_window, down
        )
        if spot is not None and (
            best is None
            or (spot.labelling_index, spot.n_nuclei) > (best.labelling_index, best.n_nuclei)
        ):
            best = spot
    return best
