"""The results of a Ki-67 run: one ``RoiMeasurement`` per ROI, gathered in a ``RatioRun``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..deconvolution import StainVectors
from ..roi import ROI
from .measure import Ki67Config, Ki67Result, Nuclei, summarise
from .stain_check import StainCheck

# ROIs whose (grown) box has more pixels than this are measured without a label image (1 GiB).
MAX_LABEL_PIXELS = 16384 * 16384


@dataclass(frozen=True)
class RoiMeasurement:
    """One ROI's nuclei, label image (over the ROI's pixel box) and result."""

    roi: ROI
    result: Ki67Result
    nuclei: Nuclei
    labels: np.ndarray | None  # None for ROIs too large to hold a label image
    origin_px: tuple[int, int]
    config: Ki67Config = field(default_factory=Ki67Config)
    stain_note: str = ""  # set when the stain check refused the image and it was forced

    def flip(self, label: int) -> RoiMeasurement:
        """Switch one nucleus between positive and negative and recount."""
        nuclei = self.nuclei.with_flipped(label)
        result = summarise(nuclei, self.roi.name, self.config, self.result.roi_area_um2)
        return replace(self, nuclei=nuclei, result=mark_unverified(result, self.stain_note))

    def unverified(self, note: str) -> RoiMeasurement:
        """This measurement made on an image that failed the stain check (``note`` says why)."""
        return replace(self, stain_note=note, result=mark_unverified(self.result, note))


def mark_unverified(result: Ki67Result, note: str) -> Ki67Result:
    """No bin or grade on an unverified stain: the figures stay, with ``note`` as the reason."""
    if not note:
        return result
    return replace(
        result,
        bin=None,
        who_grade=None,
        no_grade_reason=note,
        warnings=(f"{result.name}: {note}", *result.warnings),
    )


@dataclass(frozen=True)
class RatioRun:
    """All ROIs of one image, with what produced them."""

    measurements: tuple[RoiMeasurement, ...]
    mpp: float
    stains: StainVectors
    background_rgb: tuple[float, float, float]
    provenance: dict
    stain_check: StainCheck | None = None

    @property
    def stain_verified(self) -> bool:
        """False when the H-DAB check refused the image and it was measured anyway."""
        return self.stain_check is None or self.stain_check.verified

    @property
    def results(self) -> list[Ki67Result]:
        return [m.result for m in self.measurements]

    def labels_union(self) -> tuple[np.ndarray, tuple[int, int]]:
        """One uint32 label image over the bounding box of all ROIs, and its origin (y, x).

        A nucleus inside two overlapping ROIs is measured in each under two ids; here the
        first ROI's id is kept.
        """
        kept = [m for m in self.measurements if m.labels is not None]
        if len(kept) < len(self.measurements):
            big = [m.roi.name for m in self.measurements if m.labels is None]
            raise ValueError(f"ROIs {big} are too large to keep a label image; use smaller ROIs")
        y0 = min(m.origin_px[0] for m in kept)
        x0 = min(m.origin_px[1] for m in kept)
        y1 = max(m.origin_px[0] + m.labels.shape[0] for m in kept)
        x1 = max(m.origin_px[1] + m.labels.shape[1] for m in kept)
        if (y1 - y0) * (x1 - x0) > MAX_LABEL_PIXELS:
            raise ValueError("the ROIs span too large a box for one label image; export per ROI")
        out = np.zeros((y1 - y0, x1 - x0), np.uint32)
        for m in kept:
            oy, ox = m.origin_px[0] - y0, m.origin_px[1] - x0
            view = out[oy : oy + m.labels.shape[0], ox : ox + m.labels.shape[1]]
            paste = (m.labels > 0) & (view == 0)
            view[paste] = m.labels[paste]
        return out, (y0, x0)

    def replace_measurement(self, index: int, measurement: RoiMeasurement) -> RatioRun:
        items = list(self.measurements)
        items[index] = measurement
        return replace(self, measurements=tuple(items))
