"""Nuclei segmentation metrics as in seed 003: Dice and object-level scores over IoU thresholds.

Objects are matched one-to-one (Hungarian assignment on IoU, pairs below the threshold
excluded), which is also how StarDist's ``matching`` counts. Accuracy is TP / (TP + FP + FN).

Empty images: a score whose denominator is zero is 1.0, since no error of its kind was possible
(``zero_division=1``, as for :func:`dice`). So an empty prediction of an empty truth scores 1.0
on every measure at every IoU threshold; an empty prediction of a non-empty truth has precision
1.0 but recall, F1 and accuracy 0.0. Pooled curves follow the same rule on the summed counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5 ... 0.95


@dataclass(frozen=True)
class MatchResult:
    """Object-level counts and scores at one IoU threshold."""

    iou_threshold: float
    tp: int
    fp: int
    fn: int
    mean_matched_iou: float

    @property
    def precision(self) -> float:
        return _score(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _score(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _score(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def accuracy(self) -> float:
        return _score(self.tp, self.tp + self.fp + self.fn)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(precision=self.precision, recall=self.recall, f1=self.f1, accuracy=self.accuracy)
        return d


def _score(hits: int, denom: int) -> float:
    """hits / denom, and 1.0 when there was nothing to count (the module's empty rule)."""
    return hits / denom if denom else 1.0


def _check_labels(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"label images differ in shape: pred {pred.shape} vs truth {truth.shape}")
    for name, a in (("pred", pred), ("truth", truth)):
        if not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
            raise ValueError(f"{name} must be an integer label image, found dtype {a.dtype}")
    return pred, truth


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Foreground Dice coefficient 2|P∩T| / (|P| + |T|); 1.0 when both are empty."""
    pred, truth = _check_labels(pred, truth)
    p, t = pred > 0, truth > 0
    denom = p.sum() + t.sum()
    return float(2.0 * np.logical_and(p, t).sum() / denom) if denom else 1.0


def iou_matrix(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every (truth, pred) object pair, with the label ids of rows and columns."""
    pred, truth = _check_labels(pred, truth)
    t_ids, t_inv = np.unique(truth.ravel(), return_inverse=True)
    p_ids, p_inv = np.unique(pred.ravel(), return_inverse=True)
    # a contingency table by bincount is O(pixels), instead of one mask per object pair
    overlap = np.bincount(t_inv * len(p_ids) + p_inv, minlength=len(t_ids) * len(p_ids))
    overlap = overlap.reshape(len(t_ids), len(p_ids)).astype(np.float64)
    t_keep, p_keep = t_ids != 0, p_ids != 0
    area_t = overlap.sum(axis=1, keepdims=True)
    area_p = overlap.sum(axis=0, keepdims=True)
    iou = overlap / np.maximum(area_t + area_p - overlap, 1.0)
    return iou[np.ix_(t_keep, p_keep)], t_ids[t_keep], p_ids[p_keep]


def _match_from_iou(iou: np.ndarray, threshold: float) -> MatchResult:
    n_true, n_pred = iou.shape
    if n_true == 0 or n_pred == 0:
        # no pair to match; two empty images agree perfectly, so their matched IoU is 1.0 too
        both_empty = n_true == n_pred == 0
        return MatchResult(float(threshold), 0, n_pred, n_true, 1.0 if both_empty else 0.0)
    eligible = iou >= threshold
    # maximise total IoU among eligible pairs; ineligible pairs cost more than any eligible one
    cost = np.where(eligible, -iou, 1.0)
    rows, cols = linear_sum_assignment(cost)
    ok = eligible[rows, cols]
    tp = int(ok.sum())
    mean_iou = float(iou[rows[ok], cols[ok]].mean()) if tp else 0.0
    return MatchResult(float(threshold), tp, n_pred - tp, n_true - tp, mean_iou)


def match_instances(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> MatchResult:
    """One-to-one object matching at ``iou_threshold``: TP, FP, FN and the derived scores."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    iou, _, _ = iou_matrix(pred, truth)
    return _match_from_iou(iou, iou_threshold)


def f1_curve(
    pred: np.ndarray, truth: np.ndarray, thresholds: tuple[float, ...] = IOU_THRESHOLDS
) -> list[MatchResult]:
    """:func:`match_instances` at each IoU threshold (0.5 to 0.95 in 0.05 steps by default)."""
    iou, _, _ = iou_matrix(pred, truth)
    return [_match_from_iou(iou, t) for t in thresholds]


def pooled_curve(curves: list[list[MatchResult]]) -> dict[str, list[float]]:
    """Object-matching scores over IoU thresholds, pooled over images.

    ``curves`` holds one :func:`f1_curve` per image (same thresholds). Counts are summed over
    images before the ratios, as StarDist's ``matching_dataset`` does, so a large image weighs
    by its objects, not as one image. A ratio with nothing to count is 1.0 (the module's rule
    for empty images).
    """
    if not curves:
        raise ValueError("no images to pool")
    thresholds = [m.iou_threshold for m in curves[0]]
    if any([m.iou_threshold for m in c] != thresholds for c in curves):
        raise ValueError("every image's curve must use the same IoU thresholds")
    tp, fp, fn = (
        np.array([[getattr(m, k) for m in c] for c in curves]).sum(0) for k in "tp fp fn".split()
    )

    def score(hits: np.ndarray, denom: np.ndarray) -> list[float]:
        return np.where(denom > 0, hits / np.maximum(denom, 1), 1.0).tolist()

    return {
        "iou": thresholds,
        "accuracy": score(tp, tp + fp + fn),
        "precision": score(tp, tp + fp),
        "recall": score(tp, tp + fn),
        "f1": score(2 * tp, 2 * tp + fp + fn),
        "tp": tp.astype(float).tolist(),
        "fp": fp.astype(float).tolist(),
        "fn": fn.astype(float).tolist(),
    }
