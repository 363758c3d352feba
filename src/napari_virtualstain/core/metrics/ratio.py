"""Ki-67 ratio accuracy as in seed 002: threshold accuracies, MSE, MAE and a 3-bin confusion."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DELTA_THRESHOLDS = (0.05, 0.1, 0.2)
# Bins of the Ki-67 index: low (0-0.2), intermediate (0.2-0.5), high (0.5-1); right edges open
# except the last, so 0.2 is "intermediate" and 1.0 is "high".
BIN_EDGES = (0.0, 0.2, 0.5, 1.0)
BIN_LABELS = ("0-0.2", "0.2-0.5", "0.5-1")


@dataclass(frozen=True)
class RatioMetrics:
    """Agreement of predicted and true ratios over ``n`` pairs."""

    n: int
    mse: float
    mae: float
    within: dict[float, float]  # |delta| < threshold -> fraction of pairs
    confusion: np.ndarray = field(repr=False)  # rows: true bin, columns: predicted bin

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "mse": self.mse,
            "mae": self.mae,
            "within": {f"{k:g}": v for k, v in self.within.items()},
            "confusion": {"bins": list(BIN_LABELS), "rows_true_cols_pred": self.confusion.tolist()},
        }


def ratio_bin(ratio: np.ndarray) -> np.ndarray:
    """Bin index (0, 1, 2) of each ratio in [0, 1]."""
    r = np.asarray(ratio, dtype=np.float64)
    if np.any((r < 0) | (r > 1)) or np.any(~np.isfinite(r)):
        raise ValueError("ratios must be finite and in [0, 1]")
    return np.clip(np.searchsorted(BIN_EDGES, r, side="right") - 1, 0, len(BIN_LABELS) - 1)


def confusion_matrix(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """3x3 counts, rows = true bin, columns = predicted bin."""
    cm = np.zeros((len(BIN_LABELS),) * 2, dtype=np.int64)
    np.add.at(cm, (ratio_bin(truth), ratio_bin(pred)), 1)
    return cm


def ratio_metrics(
    pred: np.ndarray, truth: np.ndarray, thresholds: tuple[float, ...] = DELTA_THRESHOLDS
) -> RatioMetrics:
    """All ratio-agreement measures for paired arrays of predicted and true ratios."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    truth = np.asarray(truth, dtype=np.float64).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"{pred.size} predicted ratios but {truth.size} true ones")
    if pred.size == 0:
        raise ValueError("no ratio pairs to evaluate")
    delta = np.abs(pred - truth)
    return RatioMetrics(
        n=int(pred.size),
        mse=float(np.mean(delta**2)),
        mae=float(np.mean(delta)),
        within={float(t): float(np.mean(delta < t)) for t in thresholds},
        confusion=confusion_matrix(pred, truth),
    )
