"""The core ``Slide`` behind an image layer: an mpp given by the user makes a new slide."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image

from napari_virtualstain._napari.virtual_layer import slide_from_layer


def test_a_given_mpp_overrides_the_layers_without_mutating_a_slide():
    rgb = np.zeros((64, 96, 3), np.uint8)
    layer = Image(rgb, rgb=True, name="he", metadata={"mpp": 0.5})
    assert slide_from_layer(layer).mpp == 0.5
    slide = slide_from_layer(layer, mpp=0.25)
    assert slide.mpp == 0.25 and slide.shape == (64, 96) and slide.name == "he"
    assert layer.metadata["mpp"] == 0.5  # the layer keeps its own value
    with pytest.raises(ValueError, match="mpp must be > 0"):
        slide_from_layer(layer, mpp=-1.0)
