"""SSIM pair filtering for roughly paired H&E / IHC tiles from adjacent sections.

Following "Deep Learning Models for Tumor Ratio Estimation": tiles are cut at the same physical
position of the two (registered) slides and a pair is kept only when the structural similarity of
the two tiles' grey levels exceeds a threshold (default 0.4). The stains differ in colour, so the
comparison is on luminance, where nuclei and tissue outlines are shared.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_virtualstain.core.train.layouts import is_test_file
from napari_virtualstain.core.train.tiles import (
    TileSpec,
    grid_starts,
    output_shape,
    read_tile,
    resolve_level,
    save_png,
    tissue_fraction,
)

PAIRS_INDEX = "pairs.csv"


@dataclass(frozen=True)
class PairSpec:
    """How to cut and filter pairs.

    Parameters
    ----------
    tiles : TileSpec
        Tile size, overlap, output mpp and white cleaning (applied to the H&E tile).
    ssim_min : float
        Keep a pair only if the grey-level SSIM of its tiles is greater than this.
    test_fraction : float
        Fraction of kept pairs written to ``test`` (by a hash of the name, so it is stable).
    """

    tiles: TileSpec = TileSpec()
    ssim_min: float = 0.4
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not -1.0 <= self.ssim_min <= 1.0:
            raise ValueError(f"ssim_min must be in [-1, 1], got {self.ssim_min}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")


def grey_uint8(rgb: np.ndarray) -> np.ndarray:
    """Luminance of an RGB uint8 image as uint8 (ITU-R 601, as skimage's rgb2gray)."""
    from skimage.color import rgb2gray

    return np.clip(np.rint(rgb2gray(rgb) * 255), 0, 255).astype(np.uint8)


def pair_ssim(he: np.ndarray, ihc: np.ndarray) -> float:
    """Grey-level SSIM between an H&E tile and its IHC partner (same shape, uint8 RGB)."""
    from napari_virtualstain.core.metrics import ssim

    if he.shape != ihc.shape:
        raise ValueError(f"pair tiles differ in shape: H&E {he.shape} vs IHC {ihc.shape}")
    return float(ssim(grey_uint8(he), grey_uint8(ihc)))


def filter_pairs(
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray]], ssim_min: float = 0.4
) -> Iterator[tuple[str, np.ndarray, np.ndarray, float]]:
    """Yield ``(name, he, ihc, ssim)`` for the pairs whose grey-level SSIM exceeds ``ssim_min``."""
    for name, he, ihc in pairs:
        score = pair_ssim(he, ihc)
        if score > ssim_min:
            yield name, he, ihc, score


def _common_grid(he_slide, ihc_slide, spec: TileSpec):
    """Level and scale per slide, and the output-pixel grid of their common extent."""
    he_level, he_scale = resolve_level(he_slide, spec, None)
    ihc_level, ihc_scale = resolve_level(ihc_slide, spec, None)
    he_shape = output_shape(he_slide, he_level, he_scale)
    ihc_shape = output_shape(ihc_slide, ihc_level, ihc_scale)
    out_h, out_w = min(he_shape[0], ihc_shape[0]), min(he_shape[1], ihc_shape[1])
    ys = grid_starts(out_h, spec.tile_px, spec.stride_px)
    xs = grid_starts(out_w, spec.tile_px, spec.stride_px)
    return (he_level, he_scale), (ihc_level, ihc_scale), [(y, x) for y in ys for x in xs]


def iter_make_pairs(
    he_slide,
    ihc_slide,
    out_dir: str | Path,
    spec: PairSpec = PairSpec(),
) -> Iterator[tuple[int, int, int]]:
    """Cut same-position tiles of two slides, filter by SSIM and write a BCI layout.

    The slides are taken as registered (same physical origin and pixel size after resampling to
    ``spec.tiles.mpp``). Yields ``(done, total, kept)``; close the generator to cancel. Writes
    ``out_dir/HE/{train,test}``, ``out_dir/IHC/{train,test}`` and ``out_dir/pairs.csv``.
    """
    from napari_virtualstain.core.io import open_slide

    he_slide = open_slide(he_slide) if isinstance(he_slide, str | Path) else he_slide
    ihc_slide = open_slide(ihc_slide) if isinstance(ihc_slide, str | Path) else ihc_slide
    out_dir = Path(out_dir)
    index = out_dir / PAIRS_INDEX
    if index.exists():
        raise FileExistsError(f"{index} exists; choose another output folder")
    for sub in ("HE/train", "HE/test", "IHC/train", "IHC/test"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    he_at, ihc_at, grid = _common_grid(he_slide, ihc_slide, spec.tiles)
    tile_px, kept = spec.tiles.tile_px, 0
    with open(index, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "part", "y", "x", "mpp", "ssim", "tissue_fraction"])
        for done, (ty, tx) in enumerate(grid, start=1):
            _, _, he = read_tile(he_slide, *he_at, ty, tx, tile_px)
            fraction = tissue_fraction(he, spec.tiles.white_level)
            if fraction >= spec.tiles.min_tissue:
                _, _, ihc = read_tile(ihc_slide, *ihc_at, ty, tx, tile_px)
                score = pair_ssim(he, ihc)
                if score > spec.ssim_min:
                    name = f"{he_slide.name}_y{ty}_x{tx}.png"
                    part = "test" if is_test_file(name, spec.test_fraction) else "train"
                    save_png(out_dir / "HE" / part / name, he)
                    save_png(out_dir / "IHC" / part / name, ihc)
                    writer.writerow([name, part, ty, tx, spec.tiles.mpp, round(score, 4), fraction])
                    handle.flush()
                    kept += 1
            yield done, len(grid), kept
