"""The protocol every nuclei segmenter follows: an RGB region plus its pixel size in, labels out."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Protocol, runtime_checkable

import numpy as np

from ..progress import Progress, drain
from ._intensity import config_from


@runtime_checkable
class Segmenter(Protocol):
    """Nuclei instance segmentation.

    ``segment`` takes an (H, W, 3) uint8 RGB array and its pixel size in µm, and returns an
    (H, W) uint32 instance label image (0 = background, 1..N = nuclei). Implementations must
    accept empty or all-background input and return all zeros for it.
    """

    name: str

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray: ...


class LoadOnUseSegmenter:
    """What the network backends (Cellpose, StarDist) share: built from their ``config_class``
    (or its keyword options), the model loaded by ``_load_model`` on first use, and ``segment``
    running the ``iter_segment`` generator to its end."""

    name: str
    config_class: type

    def __init__(self, config=None, **options) -> None:
        self.config = config_from(config, options, self.config_class)
        self._model = None

    def load(self):
        """The loaded model (loaded on the first call, see ``_load_model``)."""
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def _load_model(self):
        raise NotImplementedError

    def segment(
        self, rgb: np.ndarray, mpp: float, progress: Callable[[Progress], None] | None = None
    ) -> np.ndarray:
        """(H, W) uint32 nuclei labels of an (H, W, 3) RGB region at ``mpp`` µm/px."""
        return drain(self.iter_segment(rgb, mpp), progress)

    def iter_segment(self, rgb: np.ndarray, mpp: float) -> Generator[Progress, None, np.ndarray]:
        raise NotImplementedError
