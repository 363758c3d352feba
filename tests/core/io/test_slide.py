"""``Slide`` is immutable: a corrected pixel size is a new slide (``with_mpp``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from napari_virtualstain.core.io import Slide


def _slide(mpp=None) -> Slide:
    levels = [da.zeros((s, 2 * s, 3), dtype=np.uint8, chunks=64) for s in (400, 200, 100)]
    return Slide(path=Path("scan.svs"), name="scan", levels=levels, mpp=mpp)


def test_slide_cannot_be_changed_in_place():
    slide = _slide(0.25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        slide.mpp = 0.5
    assert isinstance(slide.levels, tuple)  # no appending levels behind the slide's back
    assert slide.mpp == 0.25


def test_with_mpp_gives_a_new_slide_and_its_levels_follow():
    unknown = _slide()
    assert unknown.level_mpps == [None, None, None]
    assert unknown.best_level_for_mpp(1.0) == 0  # unknown pixel size: level 0
    known = unknown.with_mpp(0.25)
    assert unknown.mpp is None  # the original is untouched
    assert known.mpp == 0.25 and known.levels == unknown.levels and known.name == "scan"
    assert known.level_mpps == [0.25, 0.5, 1.0]
    assert known.best_level_for_mpp(0.5) == 1
    assert known.best_level_for_mpp(0.9) == 1  # never coarser than asked
    assert known.with_mpp(None).mpp is None


def test_a_bad_pixel_size_names_the_slide():
    with pytest.raises(ValueError, match=r"scan\.svs.*mpp must be > 0"):
        _slide().with_mpp(0.0)
    with pytest.raises(ValueError, match="no pyramid levels"):
        Slide(path=Path("empty.tif"), name="empty", levels=[])


def test_read_region_pads_outside_the_image_with_glass():
    rgb = np.arange(40 * 50 * 3, dtype=np.uint8).reshape(40, 50, 3)
    slide = Slide(path=None, name="s", levels=[da.from_array(rgb, chunks=16)], mpp=0.5)
    region = slide.read_region(0, 30, -5, 20, 10)  # past the bottom and left edges
    np.testing.assert_array_equal(region[:10, 5:], rgb[30:40, 0:5])
    assert (region[10:] == 255).all() and (region[:, :5] == 255).all()
    assert (slide.read_region(0, 100, 100, 4, 4) == 255).all()  # wholly outside
