"""Regions every nuclei segmenter must answer with all-zero labels (the ``Segmenter`` protocol)."""

from __future__ import annotations

import numpy as np
import pytest


def background_regions(tiny: tuple[int, int, int], glass: tuple[int, int, int]):
    """Parametrise ``rgb`` with an empty region, a tiny one and a glass-only one; ``tiny`` and
    ``glass`` are (height px, width px, grey level) of uniform uint8 RGB regions."""
    uniform = [np.full((h, w, 3), level, np.uint8) for h, w, level in (tiny, glass)]
    return pytest.mark.parametrize(
        "rgb", [np.zeros((0, 0, 3), np.uint8), *uniform], ids=["empty", "tiny", "glass"]
    )
