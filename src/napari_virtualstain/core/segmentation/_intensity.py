"""Helpers shared by the segmenters: input checks, options, intensity normalisation."""

from __future__ import annotations

import numpy as np

# Percentiles of a region of whole-slide size are stable on a strided subsample, and computing
# them on all 12M values of a 2k x 2k RGB ROI costs more than half a second.
_MAX_PERCENTILE_SAMPLES = 1_000_000


def check_rgb(rgb: np.ndarray, mpp: float) -> np.ndarray:
    """Validate a segmenter input: (H, W, 3) RGB (extra alpha dropped) and a positive mpp."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, found shape {rgb.shape}")
    if mpp is None or not np.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"mpp (µm per pixel) must be a positive number, found {mpp!r}")
    return rgb[..., :3]


def config_from(config, options: dict, config_cls):
    """A segmenter's config: the ``config_cls`` instance given, or one built from ``options``."""
    if config is not None and options:
        raise TypeError(f"pass either a {config_cls.__name__} or keyword options, not both")
    return config if config is not None else config_cls(**options)


def check_normalisation(
    percentiles: tuple[float, float], value_range: tuple[float, float] | None
) -> None:
    """Validate percentile normalisation options (``ValueError`` saying what is wrong)."""
    low, high = percentiles
    if not 0 <= low < high <= 100:
        raise ValueError(f"norm_percentiles must satisfy 0 <= low < high <= 100: {low, high}")
    if value_range is not None and not value_range[0] < value_range[1]:
        raise ValueError(f"norm_range must be (low, high) with low < high: {value_range}")


def robust_range(
    image: np.ndarray, percentiles: tuple[float, float], min_range: float
) -> tuple[float, float] | None:
    """Low / high percentile of ``image``; ``None`` when the spread is below ``min_range``.

    ``None`` marks an empty or all-background region. Stretching such a region to [0, 1], as
    per-tile percentile normalisation does, turns JPEG noise on glass into fake nuclei.
    """
    if image.size == 0:
        return None
    step = max(1, int(np.ceil(np.sqrt(image.size / _MAX_PERCENTILE_SAMPLES))))
    sample = image[::step, ::step]
    low, high = (float(v) for v in np.percentile(sample, percentiles))
    if high - low < min_range:
        return None
    return low, high


def sequential_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel to 1..N (overdrawn polygons leave gaps) as uint32."""
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(np.asarray(labels))[0].astype(np.uint32, copy=False)


def resize_labels_nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image to ``shape`` (labels must not be blended)."""
    if labels.shape == tuple(shape):
        return labels
    rows = np.minimum((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0], labels.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1], labels.shape[1] - 1)
    return labels[rows.astype(np.intp)[:, None], cols.astype(np.intp)[None, :]]
