"""Tissue mask from a low-resolution level, and which tiles of a grid hold tissue.

Brightfield background (glass) is bright and unsaturated in H&E and in IHC alike, so Otsu on
saturation (or on optical density) separates it. A floor on the threshold keeps a tile of pure
glass from being "split" into tissue by Otsu on noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import level_for_size
from .tiling import Box, TileGrid, map_box, round_up

METHODS = ("saturation", "od")


@dataclass(frozen=True)
class TissueConfig:
    """How the tissue mask is computed.

    Parameters
    ----------
    method : {"saturation", "od"}
        Otsu on HSV saturation, or on the maximum per-channel optical density.
    min_threshold : float
        Floor on the Otsu threshold (saturation in [0, 1], or OD units).
    mask_side_px : int
        The mask is computed on the finest level whose long side is at most this.
    min_object_px : int
        Connected tissue smaller than this (mask pixels) is dropped as dust.
    closing_px : int
        Radius of the morphological closing that joins nearby fragments (mask pixels).
    min_tile_fraction : float
        A tile holds tissue when at least this fraction of its core is tissue.
    crop_margin_px : int or None
        A tissue tile whose tissue covers only part of its core is stained only over the
        tissue's bounding box grown by this many pixels (of the staining level, and at least
        two mask pixels); the rest of the core is painted as glass. None stains whole tiles.
    """

    method: str = "saturation"
    min_threshold: float = 0.07
    mask_side_px: int = 2048
    min_object_px: int = 16
    closing_px: int = 2
    min_tile_fraction: float = 0.01
    crop_margin_px: int | None = 64

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.min_threshold < 0:
            raise ValueError(f"min_threshold must be >= 0, got {self.min_threshold}")
        if self.mask_side_px < 16:
            raise ValueError(f"mask_side_px must be >= 16, got {self.mask_side_px}")
        if not 0.0 <= self.min_tile_fraction <= 1.0:
            raise ValueError(f"min_tile_fraction must be in [0, 1], got {self.min_tile_fraction}")
        if self.crop_margin_px is not None and self.crop_margin_px < 0:
            raise ValueError(f"crop_margin_px must be >= 0 or None, got {self.crop_margin_px}")


def tissue_signal(rgb: np.ndarray, method: str = "saturation") -> np.ndarray:
    """Per-pixel tissue evidence in float32: saturation, or max optical density."""
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (y, x, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if method == "saturation":
        # HSV saturation, (max - min) / max, without skimage's full HSV conversion.
        hi = rgb.max(axis=-1).astype(np.float32)
        lo = rgb.min(axis=-1).astype(np.float32)
        return np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0)
    if method == "od":
        od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0)
        return od.max(axis=-1)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def tissue_mask(rgb: np.ndarray, config: TissueConfig | None = None) -> np.ndarray:
    """A cleaned boolean tissue mask of an RGB image (True = tissue)."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.morphology import closing, disk, remove_small_objects

    config = config or TissueConfig()
    signal = tissue_signal(rgb, config.method)
    if signal.size == 0 or float(signal.max()) == float(signal.min()):
        threshold = config.min_threshold
    else:
        threshold = max(float(threshold_otsu(signal)), config.min_threshold)
    mask = signal > threshold
    if config.closing_px > 0:
        mask = closing(mask, disk(config.closing_px))
    mask = ndi.binary_fill_holes(mask)
    if config.min_object_px > 0:
        mask = remove_small_objects(mask, max_size=config.min_object_px - 1)
    return mask


def mask_level(slide, config: TissueConfig | None = None) -> int:
    """The finest level whose long side fits ``config.mask_side_px`` (else the coarsest)."""
    config = config or TissueConfig()
    return level_for_size([lv.shape for lv in slide.levels], max_px=config.mask_side_px)


def slide_tissue_mask(slide, config: TissueConfig | None = None) -> tuple[np.ndarray, int]:
    """Tissue mask of a :class:`~napari_virtualstain.core.io.Slide` at a low level.

    Returns the mask and the level it was computed on. A level still too large is
    downsampled by striding first, so this never loads a full-resolution slide.
    """
    config = config or TissueConfig()
    level = mask_level(slide, config)
    arr = slide.levels[level]
    step = max(1, int(np.ceil(max(arr.shape[:2]) / config.mask_side_px)))
    rgb = np.asarray(arr[::step, ::step].compute())
    mask = tissue_mask(rgb, config)
    if step > 1:
        # Back to the level's own pixel grid, so the mask's downsample is the level's.
        mask = np.repeat(np.repeat(mask, step, axis=0), step, axis=1)[
            : arr.shape[0], : arr.shape[1]
        ]
    return mask, level


def tissue_tiles(
    mask: np.ndarray,
    mask_downsample: float,
    grid: TileGrid,
    grid_downsample: float,
    min_fraction: float = 0.01,
) -> np.ndarray:
    """(n_rows, n_cols) bool: which tiles of ``grid`` hold tissue.

    Parameters
    ----------
    mask : np.ndarray
        Boolean tissue mask at a level with ``mask_downsample`` (level-0 px per mask px).
    grid : TileGrid
        The tile grid, on a level with ``grid_downsample``.
    min_fraction : float
        Minimum tissue fraction of a tile's core (0 means any tissue pixel).
    """
    out = np.zeros((grid.n_rows, grid.n_cols), dtype=bool)
    for row, col in grid.tiles():
        b = map_box(grid.core(row, col), grid_downsample, mask_downsample)
        cut = mask[b.y : b.y + b.h, b.x : b.x + b.w]
        if cut.size and (cut.mean() >= min_fraction if min_fraction > 0 else cut.any()):
            out[row, col] = True
    return out


# A crop that keeps more than this share of a core's pixels is not worth a tile of its own shape.
CROP_MAX_FRACTION = 0.75


def tissue_crops(
    mask: np.ndarray,
    mask_downsample: float,
    grid: TileGrid,
    grid_downsample: float,
    tissue: np.ndarray,
    margin_px: int,
    stride_px: int,
) -> np.ndarray:
    """(n_rows, n_cols, 4) int: the part of each tissue tile's core worth staining.

    Each entry is a box ``(y, x, h, w)`` in pixels of the grid's level: the bounding box of
    the tile's tissue, grown by ``margin_px`` (and at least two mask pixels), its edges on
    multiples of ``stride_px`` (so the crop's output equals the whole tile's there), clipped
    to the core. When that box keeps more than ``CROP_MAX_FRACTION`` of the core, or the tile
    is background, the entry is the whole core.
    """
    scale = mask_downsample / grid_downsample  # grid px per mask px
    margin = max(int(margin_px), int(np.ceil(2 * scale)))
    out = np.zeros((grid.n_rows, grid.n_cols, 4), np.int64)
    for row, col in grid.tiles():
        core = grid.core(row, col)
        out[row, col] = (core.y, core.x, core.h, core.w)
        if not tissue[row, col]:
            continue
        b = map_box(core, grid_downsample, mask_downsample)
        cut = mask[b.y : b.y + b.h, b.x : b.x + b.w]
        rows, cols = np.flatnonzero(cut.any(axis=1)), np.flatnonzero(cut.any(axis=0))
        if not len(rows):
            continue
        found = Box.from_corners(
            int(b.y + rows[0]), int(b.x + cols[0]), int(b.y + rows[-1] + 1), int(b.x + cols[-1] + 1)
        )
        box = map_box(found, mask_downsample, grid_downsample).grown(margin)
        y0, x0 = box.y // stride_px * stride_px, box.x // stride_px * stride_px
        y1, x1 = round_up(box.y1, stride_px), round_up(box.x1, stride_px)
        crop = Box.from_corners(y0, x0, y1, x1).intersect(core)
        if crop is not None and crop.h * crop.w <= CROP_MAX_FRACTION * core.h * core.w:
            out[row, col] = (crop.y, crop.x, crop.h, crop.w)
    return out


def grid_tissue(slide, config: TissueConfig, grid: TileGrid, level: int, stride_px: int):
    """``(tissue, crops)`` of ``grid`` on ``slide``'s ``level``: which tiles hold tissue
    (:func:`tissue_tiles`) and the part of each worth staining (:func:`tissue_crops`; None
    when ``config.crop_margin_px`` is None or no tile is cropped)."""
    mask, mask_lv = slide_tissue_mask(slide, config)
    ds = slide.downsamples
    tissue = tissue_tiles(mask, ds[mask_lv], grid, ds[level], config.min_tile_fraction)
    if config.crop_margin_px is None:
        return tissue, None
    crops = tissue_crops(
        mask, ds[mask_lv], grid, ds[level], tissue, config.crop_margin_px, stride_px
    )
    return tissue, crops if count_cropped(crops, grid) else None


def count_cropped(crops: np.ndarray | None, grid: TileGrid) -> int:
    """How many tiles :func:`tissue_crops` cropped to their tissue."""
    if crops is None:
        return 0
    whole = np.asarray([(b.y, b.x, b.h, b.w) for b in (grid.core(*t) for t in grid.tiles())])
    return int((crops.reshape(-1, 4) != whole).any(axis=1).sum())


def crop_digest(crops: np.ndarray | None) -> str:
    """A short digest of the crops, for cache namespaces ("" for whole tiles)."""
    import hashlib

    if crops is None:
        return ""
    return hashlib.sha256(np.ascontiguousarray(crops, np.int64).tobytes()).hexdigest()[:12]
