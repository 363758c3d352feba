"""The distribution of nuclear DAB OD per ROI, with the thresholds: how pathologists check them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BIN_OD = 0.02


@dataclass(frozen=True)
class DabHistogram:
    """Counts of nuclei per DAB OD bin in one ROI.

    Attributes
    ----------
    roi : str
        The ROI's name.
    edges_od : np.ndarray
        Bin edges (len(counts) + 1), DAB OD.
    counts : np.ndarray
        Nuclei per bin (mean nuclear DAB OD).
    thresholds_od : tuple of float
        The positivity threshold(s) the ROI was classified with.
    n_nuclei, n_positive : int
        Totals, as in the ROI's result (hand flips included in ``n_positive``).
    """

    roi: str
    edges_od: np.ndarray
    counts: np.ndarray
    thresholds_od: tuple[float, ...]
    n_nuclei: int
    n_positive: int

    @property
    def bin_classes(self) -> np.ndarray:
        """Per bin, the class its centre falls in: 0 negative, k above the k-th threshold."""
        centres = (self.edges_od[:-1] + self.edges_od[1:]) / 2
        return np.digitize(centres, self.thresholds_od)


def dab_histograms(run, bin_od: float = BIN_OD) -> list[DabHistogram]:
    """One histogram per ROI of a ``RatioRun``, on common edges from 0 to past the largest OD."""
    if bin_od <= 0:
        raise ValueError(f"bin_od must be > 0, got {bin_od}")
    values = [m.nuclei.dab_od_mean for m in run.measurements]
    thresholds = [max(m.config.thresholds) for m in run.measurements] or [0.2]
    top = max([float(v.max()) for v in values if v.size] + thresholds) + bin_od
    edges = np.arange(0.0, top + bin_od, bin_od)
    return [
        DabHistogram(
            roi=m.roi.name,
            edges_od=edges,
            counts=np.histogram(np.clip(v, 0, None), edges)[0],
            thresholds_od=tuple(m.config.thresholds),
            n_nuclei=m.result.n_nuclei,
            n_positive=m.result.n_positive,
        )
        for m, v in zip(run.measurements, values, strict=True)
    ]
