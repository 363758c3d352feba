"""Block-wise segmentation: nuclei on block borders are neither split nor counted twice."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import measure

from napari_virtualstain.core.geometry import TileGrid
from napari_virtualstain.core.segmentation import (
    BuiltinSegmenter,
    Progress,
    iter_segment_in_blocks,
    segment_in_blocks,
)
from tests.support.ki67_synthetic import GLASS_RGB, grid_of_nuclei


class ThresholdSegmenter:
    """Dark pixels, connected components: local, so blocks must reproduce the whole exactly."""

    name = "threshold"

    def segment(self, rgb, mpp):
        return measure.label(np.asarray(rgb).mean(axis=-1) < 200).astype(np.uint32)


def _same_partition(a, b):
    # Same objects, whatever their ids: the pairs (a, b) of overlapping ids are one-to-one.
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (pairs.shape[1] == len(np.unique(a))) and (pairs.shape[1] == len(np.unique(b)))


def test_blocks_reproduce_whole_image_segmentation_exactly():
    syn = grid_of_nuclei(n_rows=6, n_cols=6, spacing_um=12.0, radius_um=4.5)
    whole = ThresholdSegmenter().segment(syn.rgb, 0.5)
    # 50 px blocks cut through many of the 9-px-radius discs.
    blocks = segment_in_blocks(ThresholdSegmenter(), syn.rgb, 0.5, block_px=50, overlap_px=24)
    assert blocks.max() == whole.max() == 36
    assert _same_partition(whole, blocks)


def test_builtin_in_blocks_counts_each_nucleus_once_and_whole():
    syn = grid_of_nuclei(n_rows=6, n_cols=6)
    seg = BuiltinSegmenter(background_rgb=GLASS_RGB)
    labels = segment_in_blocks(seg, syn.rgb, 0.5, block_px=40, overlap_px=30)
    assert labels.max() == 36
    for i in range(1, 37):
        ids = np.unique(labels[syn.truth == i])
        assert len(ids[ids > 0]) == 1, f"nucleus {i} got labels {ids}"


def test_progress_and_cancel():
    syn = grid_of_nuclei(n_rows=4, n_cols=4)
    reports = []
    segment_in_blocks(ThresholdSegmenter(), syn.rgb, 0.5, block_px=64, progress=reports.append)
    assert all(isinstance(r, Progress) for r in reports)
    assert reports[-1].done == reports[-1].total
    gen = iter_segment_in_blocks(ThresholdSegmenter(), syn.rgb, 0.5, block_px=64)
    first = next(gen)
    assert first.done == 0 and first.total == 4
    gen.close()  # cancelling: the generator stops, nothing else runs


def test_bad_segmenter_output_and_arguments_are_reported():
    class Wrong:
        name = "wrong"

        def segment(self, rgb, mpp):
            return np.zeros((3, 3), np.uint32)

    rgb = np.full((40, 40, 3), 255, np.uint8)
    with pytest.raises(ValueError, match="returned labels of shape"):
        segment_in_blocks(Wrong(), rgb, 0.5, block_px=20)
    with pytest.raises(ValueError, match="block_px"):
        segment_in_blocks(ThresholdSegmenter(), rgb, 0.5, block_px=0)


def test_per_tile_progress_of_the_segmenter_is_forwarded():
    class Tiled(ThresholdSegmenter):
        def iter_segment(self, rgb, mpp):
            for k in range(3):
                yield Progress(k, 3, f"tile {k}")
            return self.segment(rgb, mpp)

    syn = grid_of_nuclei(n_rows=4, n_cols=4)
    reports = []
    labels = segment_in_blocks(Tiled(), syn.rgb, 0.5, block_px=32, progress=reports.append)
    assert labels.max() == 16
    n_blocks = TileGrid(syn.rgb.shape[:2], 32).n_tiles  # blocks are the one tile grid's
    assert n_blocks == 16
    assert sum(r.message.startswith("tile") for r in reports) == 3 * n_blocks


def test_an_empty_region_gives_empty_labels():
    empty = np.zeros((0, 40, 3), np.uint8)
    labels = segment_in_blocks(ThresholdSegmenter(), empty, 0.5, block_px=32)
    assert labels.shape == (0, 40) and labels.dtype == np.uint32
