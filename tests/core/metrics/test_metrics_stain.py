"""DAB-positive tissue fraction: known fractions of pure-DAB pixels on glass, no tissue, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.deconvolution import QUPATH_HDAB
from napari_virtualstain.core.metrics import dab_fraction


def _stain(od_dab: float, od_hema: float) -> np.ndarray:
    od = od_dab * QUPATH_HDAB.array[QUPATH_HDAB.index("dab")]
    od = od + od_hema * QUPATH_HDAB.array[QUPATH_HDAB.index("hematoxylin")]
    return np.round(240.0 * 10.0 ** (-od)).astype(np.uint8)


def test_known_fraction_of_positive_tissue():
    img = np.full((100, 100, 3), 240, np.uint8)  # glass
    img[20:80, 20:80] = _stain(0.0, 0.6)  # 3600 px of hematoxylin-only tissue
    img[20:80, 20:50] = _stain(0.5, 0.3)  # half of it DAB-positive (OD 0.5 >= 0.2)
    assert dab_fraction(img) == pytest.approx(0.5, abs=0.03)
    # the threshold is QuPath's: a weaker stain (OD 0.1) is not positive
    weak = img.copy()
    weak[20:80, 20:50] = _stain(0.1, 0.5)
    assert dab_fraction(weak) == pytest.approx(0.0, abs=0.03)
    assert dab_fraction(weak, dab_od_min=0.05) == pytest.approx(0.5, abs=0.03)


def test_no_tissue_and_bad_input():
    assert dab_fraction(np.full((64, 64, 3), 245, np.uint8)) == 0.0
    with pytest.raises(ValueError, match="uint8 RGB"):
        dab_fraction(np.zeros((8, 8), np.uint8))
