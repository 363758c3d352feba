"""The source-stain check: a model is fed the stain its card's direction names, or is refused."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.engine.source_stain import (
    SourceStainCheck,
    check_source_stain,
    source_overview,
)
from napari_virtualstain.core.io import open_slide
from tests.support import PACKAGE_DATA


@pytest.fixture(scope="module")
def he():
    return source_overview(open_slide(PACKAGE_DATA / "OS-1-detail_HE.ome.tif"))


@pytest.fixture(scope="module")
def ki67():
    return source_overview(open_slide(PACKAGE_DATA / "OS-2-ndpi_Ki67.ome.tif"))


def test_each_sample_fits_its_own_direction(he, ki67):
    assert max(he.shape[:2]) <= 1024 and he.dtype == np.uint8
    assert check_source_stain(he, "he->ki67") == SourceStainCheck(True, "", "he", "he")
    assert check_source_stain(ki67, "ki67->he").ok


def test_ki67_into_an_he_model_is_refused_naming_what_it_looks_like(ki67):
    check = check_source_stain(ki67, "he->ki67")
    assert not check.ok and check.looks_like == "hdab"
    assert "looks like hematoxylin + DAB (Ki-67 / IHC), not H&E" in check.reason
    assert "he->ki67" in check.reason and "\n" not in check.reason


def test_he_into_a_ki67_model_is_refused_naming_eosin(he):
    check = check_source_stain(he, "ki67->he")
    assert not check.ok and check.looks_like == "he"
    assert "looks like H&E" in check.reason and "eosin" in check.reason


def test_what_cannot_be_checked_passes_with_a_note(he):
    glass = np.full((256, 256, 3), 240, np.uint8)
    assert check_source_stain(glass, "he->ki67").ok  # too little tissue to tell
    unknown = check_source_stain(he, "A->B")  # junyanz weights without a card
    assert unknown.ok and "no check" in unknown.reason
    with pytest.raises(ValueError, match="RGB"):
        check_source_stain(np.zeros((8, 8)), "he->ki67")
