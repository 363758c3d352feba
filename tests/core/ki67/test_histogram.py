"""DAB OD histograms: bin classes split at the ROI's thresholds (the dock colours bars by them)."""

from __future__ import annotations

import numpy as np

from napari_virtualstain.core.ki67.histogram import DabHistogram


def test_bin_classes_follow_the_thresholds():
    edges = np.arange(0.0, 0.62, 0.02)  # 0 .. 0.6 OD, 30 bins
    h = DabHistogram(roi="r", edges_od=edges, counts=np.ones(30, int), thresholds_od=(0.2, 0.4),
                     n_nuclei=30, n_positive=20)  # fmt: skip
    centres = (edges[:-1] + edges[1:]) / 2
    classes = h.bin_classes
    assert classes.shape == (30,)
    assert (classes[centres < 0.2] == 0).all()
    assert (classes[(centres > 0.2) & (centres < 0.4)] == 1).all()
    assert (classes[centres > 0.4] == 2).all()
    one = DabHistogram(roi="r", edges_od=edges, counts=np.ones(30, int), thresholds_od=(0.3,),
                       n_nuclei=30, n_positive=15)  # fmt: skip
    assert set(one.bin_classes) == {0, 1}
