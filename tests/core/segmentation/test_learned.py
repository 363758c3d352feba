"""The shipped learned nucleus model: loads from the package and finds the nuclei of a real tile.

The fixture is a 96 x 96 px crop of an EndoNuke validation tile with its 37 expert points
(tests/data/nuclei/SOURCES.md); the model never saw it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_virtualstain.core.segmentation.learned import (  # noqa: E402
    DEFAULT_MODEL,
    LearnedSegmenter,
    package_model_dir,
)
from napari_virtualstain.core.train.nuclei import match_points  # noqa: E402
from napari_virtualstain.core.train.nuclei_data import label_centroids  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "nuclei" / "endonuke_1590_crop96"
MPP = 0.5


@pytest.fixture(scope="module")
def tile():
    from PIL import Image

    rgb = np.asarray(Image.open(FIXTURE.with_suffix(".png")).convert("RGB"))
    xy = np.loadtxt(FIXTURE.with_suffix(".txt"), ndmin=2)[:, :2]
    return rgb, xy[:, ::-1]  # (y, x)


@pytest.fixture(scope="module")
def segmenter():
    return LearnedSegmenter()


def f1(pred: np.ndarray, truth: np.ndarray, radius_px: float) -> float:
    tp, fp, fn = match_points(pred, truth, radius_px)
    return 2 * tp / (2 * tp + fp + fn)


def test_shipped_model_loads_from_the_package(segmenter):
    assert segmenter.path == package_model_dir(DEFAULT_MODEL)
    assert segmenter.card.name == DEFAULT_MODEL
    assert segmenter.mpp == 0.5
    assert sum(p.numel() for p in segmenter.net.parameters()) <= 2_000_000
    assert 0 < segmenter.peak_threshold < 1
    assert segmenter.card.training["split"]["val"], "the card records its validation split"


def test_finds_the_nuclei_of_a_real_held_out_tile(segmenter, tile):
    rgb, truth = tile
    labels = segmenter.segment(rgb, MPP)
    assert labels.dtype == np.uint32 and labels.shape == rgb.shape[:2]
    found = label_centroids(labels)
    assert abs(len(found) - len(truth)) <= 0.25 * len(truth)
    assert f1(found, truth, 3.0 / MPP) >= 0.75


def test_the_builtin_watershed_does_worse_on_that_tile(segmenter, tile):
    from napari_virtualstain.core.segmentation import get_segmenter

    rgb, truth = tile
    learned = f1(label_centroids(segmenter.segment(rgb, MPP)), truth, 3.0 / MPP)
    builtin = f1(label_centroids(get_segmenter("builtin").segment(rgb, MPP)), truth, 3.0 / MPP)
    assert learned > builtin


def test_a_finer_pixel_size_gives_the_same_nuclei(segmenter, tile):
    rgb, truth = tile
    fine = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)  # the same tissue at 0.25 µm/px
    labels = segmenter.segment(fine, MPP / 2)
    assert labels.shape == fine.shape[:2]
    found = (label_centroids(labels) + 0.5) / 2 - 0.5
    assert f1(found, truth, 3.0 / MPP) >= 0.75


def test_tiled_prediction_matches_whole_prediction(tile):
    rgb, _ = tile
    mosaic = np.concatenate(
        [np.concatenate([rgb, rgb[:, ::-1]], axis=1), np.concatenate([rgb[::-1], rgb], axis=1)]
    )
    whole_seg = LearnedSegmenter(tile_px=768)
    tiled_seg = LearnedSegmenter(tile_px=128, halo_px=32)
    # The centre heatmap (the detections) agrees tile by tile away from the image border, where
    # the two pad differently ...
    heat_whole, heat_tiled = whole_seg.predict(mosaic)[0], tiled_seg.predict(mosaic)[0]
    assert np.abs(heat_whole - heat_tiled)[16:-16, 16:-16].max() < 0.06
    # ... and so do the nuclei (the OD extents and merges amplify tiny map differences a little).
    a = label_centroids(whole_seg.segment(mosaic, MPP))
    b = label_centroids(tiled_seg.segment(mosaic, MPP))
    assert len(a) > 50
    assert f1(b, a, 2.0) >= 0.9


def test_dab_dark_nuclei_get_their_whole_area():
    """Rendered nuclei with known areas: the area ratio matches, brown nuclei included."""
    from napari_virtualstain.core.ki67 import measure_rois
    from tests.support.ki67_synthetic import grid_of_nuclei

    syn = grid_of_nuclei(n_rows=10, n_cols=10, mpp=0.5, positive_fraction=0.35, seed=3)
    result = measure_rois(syn.rgb, 0.5, segmenter="learned").results[0]
    assert result.n_nuclei == 100
    assert result.labelling_index == pytest.approx(syn.labelling_index, abs=0.02)
    assert result.area_ratio == pytest.approx(syn.area_ratio, abs=0.02)


def test_glass_and_empty_regions_give_no_nuclei(segmenter):
    assert segmenter.segment(np.zeros((0, 7, 3), np.uint8), MPP).shape == (0, 7)
    glass = np.full((80, 120, 3), 242, np.uint8)
    labels = segmenter.segment(glass, MPP)
    assert labels.shape == (80, 120) and labels.max() == 0


def test_rejects_bad_input(segmenter):
    with pytest.raises(ValueError, match="RGB"):
        segmenter.segment(np.zeros((8, 8), np.uint8), MPP)
    with pytest.raises(ValueError, match="mpp"):
        segmenter.segment(np.zeros((8, 8, 3), np.uint8), 0)


def test_loads_a_model_by_name_from_the_user_folder(tmp_path, monkeypatch, segmenter, tile):
    shutil.copytree(package_model_dir(), tmp_path / "my-nuclei")
    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_MODELS", str(tmp_path))
    seg = LearnedSegmenter("my-nuclei", peak_threshold=0.4)
    assert seg.path == tmp_path / "my-nuclei"
    assert seg.peak_threshold == 0.4
    # A stricter seed threshold keeps fewer nuclei: the option reaches the post-processing.
    assert 0 < seg.segment(tile[0], MPP).max() < segmenter.segment(tile[0], MPP).max()
    with pytest.raises(FileNotFoundError, match="no nucleus model"):
        LearnedSegmenter("no-such-model")


def test_offered_by_the_segmenter_factory():
    from napari_virtualstain.core.segmentation import available_segmenters, get_segmenter

    assert "learned" in available_segmenters()
    seg = get_segmenter("learned", min_distance_um=3.0)
    assert isinstance(seg, LearnedSegmenter) and seg.min_distance_um == 3.0
