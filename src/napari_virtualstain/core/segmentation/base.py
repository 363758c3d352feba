"""The protocol every nuclei segmenter follows: an RGB region plus its pixel size in, labels out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Segmenter(Protocol):
    """Nuclei instance segmentation.

    ``segment`` takes an (H, W, 3) uint8 RGB array and its pixel size in µm, and returns an
    (H, W) uint32 instance label image (0 = background, 1..N = nuclei). Implementations must
    accept empty or all-background input and return all zeros for it.
    """

    name: str

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray: ...
