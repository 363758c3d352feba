"""The built-in QuPath-like watershed on rendered nuclei of known count, class and size."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.segmentation import (
    BuiltinSegmenter,
    Segmenter,
    WatershedConfig,
    available_segmenters,
    get_segmenter,
)
from tests.support.ki67_synthetic import GLASS_RGB, grid_of_nuclei, touching_pairs


def _one_label_per_nucleus(labels, truth):
    hits = [np.unique(labels[truth == i]) for i in range(1, truth.max() + 1)]
    return [h[h > 0] for h in hits]


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_finds_every_separate_nucleus_at_any_pixel_size(mpp):
    syn = grid_of_nuclei(mpp=mpp)
    labels = BuiltinSegmenter(background_rgb=GLASS_RGB).segment(syn.rgb, mpp)
    assert labels.dtype == np.uint32 and labels.shape == syn.rgb.shape[:2]
    assert labels.max() == len(syn.positive) == 64
    assert all(len(h) == 1 for h in _one_label_per_nucleus(labels, syn.truth))
    # Areas come out in µm² whatever the pixel size: within 25 % of the drawn discs.
    measured_um2 = (labels > 0).sum() * mpp * mpp
    true_um2 = (syn.truth > 0).sum() * mpp * mpp
    assert measured_um2 == pytest.approx(true_um2, rel=0.25)


def test_touching_nuclei_are_split():
    syn = touching_pairs(n_pairs=6)
    labels = BuiltinSegmenter(background_rgb=GLASS_RGB).segment(syn.rgb, 0.5)
    assert labels.max() == 12
    # Each disc's centre carries its own label: the two discs of a pair differ.
    centres = np.round(syn.centres_px).astype(int)
    ids = labels[centres[:, 0], centres[:, 1]]
    assert (ids > 0).all() and len(set(ids.tolist())) == 12


def test_split_can_be_turned_off():
    syn = touching_pairs(n_pairs=3)
    labels = BuiltinSegmenter(background_rgb=GLASS_RGB, split_by_shape=False).segment(syn.rgb, 0.5)
    assert labels.max() == 3


def test_area_limits_are_in_um2():
    syn = grid_of_nuclei(radius_um=4.0, jitter_radius=0.0)  # every disc is ~50 µm²
    keep_none = BuiltinSegmenter(background_rgb=GLASS_RGB, min_area_um2=80, max_area_um2=400)
    assert keep_none.segment(syn.rgb, 0.5).max() == 0
    keep_all = BuiltinSegmenter(background_rgb=GLASS_RGB, min_area_um2=10, max_area_um2=80)
    assert keep_all.segment(syn.rgb, 0.5).max() == 64


def test_empty_and_blank_input_give_zeros():
    seg = BuiltinSegmenter()
    assert seg.segment(np.full((50, 60, 3), 255, np.uint8), 0.5).max() == 0
    assert seg.segment(np.full((50, 60, 3), 240, np.uint8), 0.25).shape == (50, 60)
    assert seg.segment(np.zeros((0, 10, 3), np.uint8), 0.5).shape == (0, 10)


def test_config_validates_and_factory_builds_by_name():
    with pytest.raises(ValueError, match="min_area_um2"):
        WatershedConfig(min_area_um2=500, max_area_um2=400)
    with pytest.raises(ValueError, match="detection_image"):
        WatershedConfig(detection_image="red")
    with pytest.raises(ValueError, match="mpp"):
        BuiltinSegmenter().segment(np.zeros((8, 8, 3), np.uint8), 0)
    seg = get_segmenter("builtin", threshold_od=0.2)
    assert isinstance(seg, Segmenter) and seg.config.threshold_od == 0.2
    with pytest.raises(ValueError, match="unknown segmenter"):
        get_segmenter("magic")
    assert "builtin" in available_segmenters()


def test_factory_builds_the_weight_based_backends_by_name(tmp_path):
    """``--model-dir`` / the widget's model box reach both backends as ``model``."""
    stardist = get_segmenter("stardist", model=str(tmp_path / "sd"))
    cellpose = get_segmenter("cellpose", model=str(tmp_path / "cp.pth"))
    assert (stardist.name, cellpose.name) == ("stardist", "cellpose")
    assert str(stardist.config.model).endswith("sd") and str(cellpose.config.model).endswith(
        "cp.pth"
    )
    assert isinstance(stardist, Segmenter) and isinstance(cellpose, Segmenter)
    assert available_segmenters() == ["builtin", "stardist", "cellpose", "learned"]
