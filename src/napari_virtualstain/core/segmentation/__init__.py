"""Nuclei segmentation: one protocol (``Segmenter``), three backends, a factory and block tiling.

``get_segmenter("builtin" | "stardist" | "cellpose" | "learned", **options)`` builds a backend
("learned" is the project's own nucleus model, shipped in the package). StarDist
(TensorFlow) and Cellpose (torch) live in their own modules, imported only when asked for, so that
importing this package (and opening napari) stays fast.
"""

from __future__ import annotations

import importlib

from ..progress import Progress, drain
from .base import Segmenter
from .blocks import iter_segment_in_blocks, segment_in_blocks
from .builtin import BuiltinSegmenter, WatershedConfig

# name -> (module, class); the heavy modules are imported on first use only.
BACKENDS: dict[str, tuple[str, str]] = {
    "builtin": (".builtin", "BuiltinSegmenter"),
    "stardist": (".stardist", "StarDistSegmenter"),
    "cellpose": (".cellpose", "CellposeSegmenter"),
    "learned": (".learned", "LearnedSegmenter"),
}

# The Ki-67 default: the shipped learned model measured better than the watershed on the held-out
# split (centre F1 0.864 vs 0.666, labelling-index error 0.021 vs 0.029; see
# benchmarks/bench_nuclei_accuracy.py and data/models/nuclei-endonuke-dsb/MODEL_CARD.md).
DEFAULT_SEGMENTER = "learned"

__all__ = [
    "BACKENDS",
    "DEFAULT_SEGMENTER",
    "BuiltinSegmenter",
    "Progress",
    "Segmenter",
    "WatershedConfig",
    "available_segmenters",
    "drain",
    "get_segmenter",
    "iter_segment_in_blocks",
    "segment_in_blocks",
]


def available_segmenters() -> list[str]:
    """Backend names whose module is part of this install (their libraries may still be absent)."""
    import importlib.util

    return [
        name
        for name, (module, _) in BACKENDS.items()
        if importlib.util.find_spec(module, __package__) is not None
    ]


def get_segmenter(name: str, **options) -> Segmenter:
    """Build the segmenter called ``name`` with its backend-specific ``options``.

    Raises
    ------
    ValueError
        For an unknown name.
    ImportError
        When the backend's module or library is not installed, naming the extra to install.
    """
    key = name.lower().strip()
    if key not in BACKENDS:
        raise ValueError(f"unknown segmenter {name!r}; expected one of {sorted(BACKENDS)}")
    module_name, class_name = BACKENDS[key]
    try:
        module = importlib.import_module(module_name, __package__)
    except ModuleNotFoundError as err:
        raise ImportError(
            f"segmenter {key!r} is not available ({err}); install it with "
            f"pip install 'napari-virtualstain[{key}]'"
        ) from err
    factory = getattr(module, class_name, None)
    if factory is None:
        raise ImportError(f"{module.__name__} does not define {class_name}")
    segmenter = factory(**options)
    if not isinstance(segmenter, Segmenter):
        raise TypeError(f"{class_name} does not follow the Segmenter protocol")
    return segmenter
