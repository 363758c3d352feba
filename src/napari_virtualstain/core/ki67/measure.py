"""Per-nucleus DAB measurements, positivity classes and the Ki-67 ratios of a region.

Classes follow QuPath's positive-cell detection on the nucleus DAB OD mean: one threshold
(positive / negative, the default) or three (1+ / 2+ / 3+, QuPath's 0.2 / 0.4 / 0.6). The H-score
always uses three intensity tiers. Two ratios are given: the *area ratio* (positive nuclei area /
all nuclei area, as in "Deep Learning Models for Tumor Ratio Estimation") and the *labelling
index* (positive count / all nuclei), which grades neuroendocrine tumours (WHO: G1 < 3 %,
G2 3-20 %, G3 > 20 %).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from ..deconvolution import QUPATH_HDAB, StainVectors, estimate_background, stain_channel

QUPATH_INTENSITY_THRESHOLDS = (0.2, 0.4, 0.6)
RATIO_BINS = ((0.0, 0.2, "0-0.2"), (0.2, 0.5, "0.2-0.5"), (0.5, 1.0, "0.5-1"))
MIN_NUCLEI_FOR_GRADE = 500
# QuPath's default nucleus detection threshold (hematoxylin OD); nuclei below it in H + DAB are
# too faint to tell positive from negative with confidence.
FAINT_NUCLEUS_OD = 0.1


@dataclass(frozen=True)
class Ki67Config:
    """How nuclei are classified.

    Attributes
    ----------
    thresholds : tuple of float
        One DAB OD threshold (positive / negative) or three increasing ones (1+ / 2+ / 3+);
        a nucleus is positive when its DAB OD mean reaches the first.
    hscore_thresholds : tuple of float
        The three tiers the H-score counts; the same as ``thresholds`` when three are given.
    min_nuclei_for_grade : int
        With fewer nuclei than this no bin or grade is given (``no_grade_reason`` says so).
    faint_od : float
        A nucleus whose mean hematoxylin + DAB OD is below this is reported as too faint to
        classify (``n_faint``); it still counts, as a negative, as QuPath counts it.
    """

    thresholds: tuple[float, ...] = (0.2,)
    hscore_thresholds: tuple[float, float, float] = QUPATH_INTENSITY_THRESHOLDS
    min_nuclei_for_grade: int = MIN_NUCLEI_FOR_GRADE
    faint_od: float = FAINT_NUCLEUS_OD

    def __post_init__(self) -> None:
        if self.min_nuclei_for_grade < 0 or not self.faint_od >= 0:
            raise ValueError(
                f"min_nuclei_for_grade and faint_od must be >= 0, got "
                f"{self.min_nuclei_for_grade}, {self.faint_od}"
            )
        th = tuple(float(t) for t in self.thresholds)
        if len(th) not in (1, 3):
            raise ValueError(f"give one or three DAB OD thresholds, got {len(th)}: {th}")
        if len(th) == 3:
            object.__setattr__(self, "hscore_thresholds", th)
        object.__setattr__(self, "thresholds", th)
        for name in ("thresholds", "hscore_thresholds"):
            values = np.asarray(getattr(self, name), dtype=float)
            if not (np.all(values > 0) and np.all(np.diff(values) > 0)):
                raise ValueError(
                    f"{name} must be positive and increasing, got {tuple(values.tolist())}"
                )
        if len(self.hscore_thresholds) != 3:
            raise ValueError(f"hscore_thresholds needs three values, got {self.hscore_thresholds}")

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes ``classify`` returns, index = class."""
        return (
            ("Negative", "Positive")
            if len(self.thresholds) == 1
            else ("Negative", "1+", "2+", "3+")
        )


def classify(dab_od: np.ndarray, thresholds) -> np.ndarray:
    """Class per nucleus: 0 below the first threshold, k at or above the k-th."""
    return np.digitize(np.asarray(dab_od, dtype=float), np.asarray(thresholds, dtype=float))


@dataclass(frozen=True)
class Nuclei:
    """Per-nucleus measurements (one entry per nucleus, arrays of equal length).

    ``y`` and ``x`` are centroids in level-0 pixels of the whole image; ``label`` is the value in
    the label image; ``flipped`` marks nuclei whose class a user changed by hand.
    """

    label: np.ndarray
    y: np.ndarray
    x: np.ndarray
    area_um2: np.ndarray
    dab_od_mean: np.ndarray
    dab_od_max: np.ndarray
    dab_od_median: np.ndarray
    hematoxylin_od_mean: np.ndarray
    intensity_class: np.ndarray
    positive: np.ndarray
    flipped: np.ndarray

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @classmethod
    def empty(cls) -> Nuclei:
        """No nuclei."""
        f = np.zeros(0)
        return cls(
            np.zeros(0, np.uint32), f, f, f, f, f, f, f, np.zeros(0, int), *[np.zeros(0, bool)] * 2
        )

    @classmethod
    def concat(cls, parts: list[Nuclei]) -> Nuclei:
        """All nuclei of ``parts`` in order (e.g. measured block by block)."""
        if not parts:
            return cls.empty()
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def select(self, keep: np.ndarray) -> Nuclei:
        """The nuclei where ``keep`` is True."""
        return Nuclei(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    def with_flipped(self, label: int) -> Nuclei:
        """A copy with nucleus ``label`` switched between positive and negative."""
        idx = np.flatnonzero(self.label == label)
        if idx.size == 0:
            raise KeyError(f"no nucleus with label {label}")
        positive, cls_, flipped = (
            self.positive.copy(),
            self.intensity_class.copy(),
            self.flipped.copy(),
        )
        positive[idx] = ~positive[idx]
        # A nucleus made positive by hand counts at least as 1+; made negative, as 0.
        cls_[idx] = np.where(positive[idx], np.maximum(cls_[idx], 1), 0)
        flipped[idx] = ~flipped[idx]
        return replace(self, positive=positive, intensity_class=cls_, flipped=flipped)

    def columns(self) -> dict[str, np.ndarray]:
        """Column name -> array, for tables and CSV."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def measure_nuclei(
    labels: np.ndarray,
    rgb: np.ndarray,
    mpp: float,
    stains: StainVectors = QUPATH_HDAB,
    background_rgb=None,
    config: Ki67Config | None = None,
    origin_px: tuple[int, int] = (0, 0),
) -> Nuclei:
    """Measure every labelled nucleus on the DAB and hematoxylin OD of ``rgb``.

    ``labels`` and ``rgb`` cover the same pixels; ``origin_px`` is where they sit in the image,
    so that centroids come out in whole-image level-0 pixels. ``rgb`` may be a different image
    than the one segmented (seed 003: nuclei from a virtual H&E, DAB from the original IHC).
    """
    config = config or Ki67Config()
    labels = np.asarray(labels)
    if labels.shape != np.asarray(rgb).shape[:2]:
        raise ValueError(
            f"labels {labels.shape} and image {np.asarray(rgb).shape[:2]} differ in size"
        )
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return Nuclei.empty()
    rgb = np.asarray(rgb)[..., :3]
    bg = estimate_background(rgb) if background_rgb is None else background_rgb
    dab = stain_channel(rgb, stains, "dab", bg)
    hema = stain_channel(rgb, stains, "hematoxylin", bg)
    # Only labelled pixels matter; nuclei cover a fraction of the region.
    pix = np.flatnonzero(labels)
    flat = labels.ravel()[pix].astype(np.intp)
    dab_v, hema_v = dab.ravel()[pix], hema.ravel()[pix]
    counts = np.bincount(flat)
    yy, xx = np.divmod(pix, labels.shape[1])
    cy = np.bincount(flat, yy, counts.size)[ids] / counts[ids]
    cx = np.bincount(flat, xx, counts.size)[ids] / counts[ids]
    dab_mean = np.bincount(flat, dab_v, counts.size)[ids] / counts[ids]
    dab_median, dab_max = _label_median_max(dab_v, flat, ids)
    positive = classify(dab_mean, config.thresholds) >= 1
    return Nuclei(
        label=ids.astype(np.uint32),
        y=cy + origin_px[0],
        x=cx + origin_px[1],
        area_um2=counts[ids] * mpp * mpp,
        dab_od_mean=dab_mean,
        dab_od_max=dab_max,
        dab_od_median=dab_median,
        hematoxylin_od_mean=np.bincount(flat, hema_v, counts.size)[ids] / counts[ids],
        intensity_class=classify(dab_mean, config.hscore_thresholds),
        positive=positive,
        flipped=np.zeros(ids.size, bool),
    )


def _label_median_max(values: np.ndarray, flat_labels: np.ndarray, ids: np.ndarray):
    """Median and maximum of ``values`` per label in ``ids``, from one sort.

    scipy.ndimage's median and maximum sort per label and cost seconds on thousands of nuclei.
    """
    inside = flat_labels > 0
    lab, val = flat_labels[inside], values.ravel()[inside]
    # One argsort of a combined key (label + value scaled into [0, 1)) beats a lexsort.
    scale = float(val.max()) * 1.001 + 1e-9 if val.size else 1.0
    order = np.argsort(lab + val.astype(np.float64) / scale, kind="stable")
    lab, val = lab[order], val[order]
    starts = np.searchsorted(lab, ids, side="left")
    ends = np.searchsorted(lab, ids, side="right")
    lo, hi = starts + (ends - starts - 1) // 2, starts + (ends - starts) // 2
    return (val[lo].astype(float) + val[hi]) / 2.0, val[ends - 1].astype(float)


@dataclass(frozen=True)
class Ki67Result:
    """The Ki-67 figures of one region. Ratios are fractions in [0, 1], never NaN."""

    name: str
    n_nuclei: int
    n_positive: int
    n_negative: int
    n_1plus: int
    n_2plus: int
    n_3plus: int
    labelling_index: float
    area_ratio: float
    h_score: float
    bin: str | None
    who_grade: str | None
    nuclei_area_um2: float
    positive_area_um2: float
    roi_area_um2: float | None = None
    n_flipped: int = 0
    warnings: tuple[str, ...] = ()
    no_grade_reason: str = ""
    n_faint: int = 0

    @property
    def graded(self) -> bool:
        """True when a bin and a grade are given (enough nuclei, stain verified)."""
        return self.bin is not None and self.who_grade is not None

    def to_dict(self) -> dict:
        """JSON-ready (plain floats and ints, warnings as a list)."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out


def ratio_bin(ratio: float) -> str:
    """The seed's tumour-ratio bin: "0-0.2", "0.2-0.5" or "0.5-1"."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"a ratio lies in [0, 1], got {ratio}")
    for lo, hi, name in RATIO_BINS:
        if lo <= ratio < hi:
            return name
    return RATIO_BINS[-1][2]


def who_grade(labelling_index: float) -> str:
    """WHO neuroendocrine grade from the Ki-67 labelling index (a fraction)."""
    percent = 100.0 * labelling_index
    if percent < 3.0:
        return "G1"
    return "G2" if percent <= 20.0 else "G3"


def summarise(
    nuclei: Nuclei,
    name: str,
    config: Ki67Config | None = None,
    roi_area_um2: float | None = None,
    no_tissue: bool = False,
) -> Ki67Result:
    """Counts, ratios, H-score, bin and grade of ``nuclei`` (already restricted to the ROI)."""
    config = config or Ki67Config()
    n = len(nuclei)
    n_pos = int(nuclei.positive.sum())
    tiers = [int((nuclei.positive & (nuclei.intensity_class == k)).sum()) for k in (1, 2, 3)]
    # A positive nucleus below the first H-score tier (custom threshold) still counts as 1+.
    tiers[0] += n_pos - sum(tiers)
    area = float(nuclei.area_um2.sum())
    pos_area = float(nuclei.area_um2[nuclei.positive].sum())
    warnings, no_grade = [], ""
    if n == 0:
        why = "no tissue in the ROI" if no_tissue else "no nuclei detected in the ROI"
        no_grade = why
        warnings.append(f"{name}: {why}; counts are 0 and no bin or grade is given")
        li = ar = hs = 0.0
    else:
        li, ar = n_pos / n, (pos_area / area if area > 0 else 0.0)
        hs = 100.0 * (tiers[0] + 2 * tiers[1] + 3 * tiers[2]) / n
        if n < config.min_nuclei_for_grade:
            # A bin or grade beside "too few" would be read as a result: give neither.
            no_grade = f"too few nuclei for grading ({n} < {config.min_nuclei_for_grade})"
            warnings.append(f"{name}: {no_grade}; no bin or grade is given")
    faint = (nuclei.dab_od_mean + nuclei.hematoxylin_od_mean) < config.faint_od
    n_faint = int((faint & ~nuclei.flipped).sum())
    if n_faint:
        warnings.append(
            f"{name}: {n_faint} nuclei too faint to classify (H + DAB OD < {config.faint_od}); "
            "counted as negative"
        )
    return Ki67Result(
        name=name,
        n_nuclei=n,
        n_positive=n_pos,
        n_negative=n - n_pos,
        n_1plus=tiers[0],
        n_2plus=tiers[1],
        n_3plus=tiers[2],
        labelling_index=float(li),
        area_ratio=float(ar),
        h_score=float(hs),
        bin=None if no_grade else ratio_bin(ar),
        who_grade=None if no_grade else who_grade(li),
        nuclei_area_um2=area,
        positive_area_um2=pos_area,
        roi_area_um2=roi_area_um2,
        n_flipped=int(nuclei.flipped.sum()),
        warnings=tuple(warnings),
        no_grade_reason=no_grade,
        n_faint=n_faint,
    )
