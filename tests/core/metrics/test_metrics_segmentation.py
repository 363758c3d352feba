"""Segmentation and ratio metrics on hand-built inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.metrics.ratio import confusion_matrix, ratio_bin, ratio_metrics
from napari_virtualstain.core.metrics.segmentation import (
    IOU_THRESHOLDS,
    dice,
    f1_curve,
    match_instances,
)


def _labels():
    truth = np.zeros((40, 60), np.int32)
    pred = np.zeros_like(truth)
    truth[2:12, 2:12] = 1  # matched exactly by pred 5
    pred[2:12, 2:12] = 5
    truth[20:30, 2:12] = 2  # pred 6 is shifted by 3 px: IoU = 70 / 130 = 0.538
    pred[23:33, 2:12] = 6
    truth[2:12, 30:40] = 3  # missed: a false negative
    pred[25:35, 40:50] = 7  # no partner: a false positive
    truth[30:36, 50:56] = 4  # pred 8 covers half of it: IoU 0.5 exactly, split in two preds
    pred[30:33, 50:56] = 8
    pred[33:36, 50:56] = 9
    return pred, truth


def test_known_tp_fp_fn_at_half():
    pred, truth = _labels()
    r = match_instances(pred, truth, 0.5)
    # 5 preds: 5, 6 and one of 8 / 9 match; 7 and the other of 8 / 9 are false positives
    assert (r.tp, r.fp, r.fn) == (3, 2, 1)
    assert r.accuracy == pytest.approx(3 / 6)
    assert r.precision == pytest.approx(3 / 5)
    assert r.recall == pytest.approx(3 / 4)
    assert r.f1 == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    r6 = match_instances(pred, truth, 0.6)
    assert (r6.tp, r6.fp, r6.fn) == (1, 4, 3)


def test_matching_is_one_to_one():
    truth = np.zeros((10, 20), np.int32)
    truth[:, :10] = 1
    pred = truth.copy()
    pred[:, 10:] = 2
    truth[:, 10:] = 1  # one big true object, two preds: only one may match
    r = match_instances(pred, truth, 0.1)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)


def test_dice_known():
    a = np.zeros((10, 10), np.uint8)
    b = np.zeros_like(a)
    a[:, :4] = 1
    b[:, 2:6] = 3
    assert dice(a, b) == pytest.approx(2 * 20 / 80)
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_iou_curve_is_monotone_and_spans_thresholds():
    rng = np.random.default_rng(0)
    truth = np.zeros((64, 64), np.int32)
    pred = np.zeros_like(truth)
    for i in range(16):
        y, x = divmod(i, 4)
        truth[y * 16 + 2 : y * 16 + 12, x * 16 + 2 : x * 16 + 12] = i + 1
        dy, dx = rng.integers(-3, 4, 2)
        pred[y * 16 + 2 + dy : y * 16 + 12 + dy, x * 16 + 2 + dx : x * 16 + 12 + dx] = i + 1
    curve = f1_curve(pred, truth)
    assert [c.iou_threshold for c in curve] == list(IOU_THRESHOLDS)
    assert IOU_THRESHOLDS[0] == 0.5 and IOU_THRESHOLDS[-1] == 0.95 and len(IOU_THRESHOLDS) == 10
    f1s = [c.f1 for c in curve]
    assert all(a >= b for a, b in zip(f1s, f1s[1:], strict=False))
    assert f1s[0] > f1s[-1]  # the shifts make the strict thresholds fail


def test_bad_label_input():
    with pytest.raises(ValueError, match="differ in shape"):
        dice(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="dtype float"):
        match_instances(np.zeros((3, 3)), np.zeros((3, 3), int))


def test_ratio_metrics_known():
    truth = np.array([0.10, 0.30, 0.60, 0.90, 0.15])
    pred = np.array([0.12, 0.45, 0.52, 0.60, 0.31])  # deltas .02 .15 .08 .30 .16
    m = ratio_metrics(pred, truth)
    assert m.n == 5
    assert m.within == {0.05: pytest.approx(0.2), 0.1: pytest.approx(0.4), 0.2: pytest.approx(0.8)}
    deltas = np.array([0.02, 0.15, 0.08, 0.30, 0.16])
    assert m.mae == pytest.approx(deltas.mean())
    assert m.mse == pytest.approx((deltas**2).mean())
    # true bins: 0,1,2,2,0 ; predicted bins: 0,1,2,2,1
    assert m.confusion.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 2]]
    assert ratio_bin([0.0, 0.2, 0.5, 1.0]).tolist() == [0, 1, 2, 2]
    assert confusion_matrix(truth, truth).trace() == 5


def test_ratio_bad_input():
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ratio_metrics([1.5], [0.5])
    with pytest.raises(ValueError, match="2 predicted ratios but 1"):
        ratio_metrics([0.1, 0.2], [0.5])


def test_pooled_curve_sums_counts_before_the_ratios():
    from napari_virtualstain.core.metrics import MatchResult, pooled_curve

    def curve(tp, fp, fn):
        return [
            MatchResult(0.5, tp, fp, fn, 0.8),
            MatchResult(0.75, tp // 2, fp + tp - tp // 2, fn + tp - tp // 2, 0.9),
        ]

    big, small = curve(90, 10, 0), curve(0, 0, 1)
    pooled = pooled_curve([big, small])
    assert pooled["iou"] == [0.5, 0.75]
    assert pooled["tp"] == [90.0, 45.0] and pooled["fn"] == [1.0, 46.0]
    # pooled accuracy 90 / 101, not the mean of the images' 0.9 and 0.0
    assert pooled["accuracy"][0] == pytest.approx(90 / 101)
    assert pooled["precision"][0] == pytest.approx(0.9) and pooled["recall"][0] == pytest.approx(
        90 / 91
    )
    assert pooled["f1"][0] == pytest.approx(180 / 191)
    empty = pooled_curve([curve(0, 0, 0)])
    assert empty["f1"] == [1.0, 1.0]  # nothing to count is 1.0, as for one image and for Dice
    with pytest.raises(ValueError, match="same IoU thresholds"):
        pooled_curve([big, big[:1]])
    with pytest.raises(ValueError, match="no images"):
        pooled_curve([])


def test_empty_images_follow_one_rule_in_every_score():
    """A zero denominator scores 1.0 everywhere: Dice, each object score, and pooled curves."""
    from napari_virtualstain.core.metrics import pooled_curve

    empty = np.zeros((20, 20), np.int32)
    one = empty.copy()
    one[5:10, 5:10] = 1
    both = f1_curve(empty, empty)
    assert dice(empty, empty) == 1.0
    for m in both:
        assert (m.precision, m.recall, m.f1, m.accuracy, m.mean_matched_iou) == (1.0,) * 5
    pooled = pooled_curve([both])
    for k in ("accuracy", "precision", "recall", "f1"):
        assert pooled[k] == [1.0] * len(IOU_THRESHOLDS), k
    missed = match_instances(empty, one)  # nothing predicted: no false positive was possible
    assert (missed.precision, missed.recall, missed.f1, missed.accuracy) == (1.0, 0.0, 0.0, 0.0)
    invented = match_instances(one, empty)  # nothing to find: no object was missed
    assert (invented.precision, invented.recall, invented.f1, invented.accuracy) == (
        0.0, 1.0, 0.0, 0.0,
    )  # fmt: skip
    # pooling an empty pair with a scored one leaves the scored one's counts unchanged
    scored = pooled_curve([f1_curve(one, one), both])
    assert scored["f1"][0] == 1.0 and scored["tp"][0] == 1.0
