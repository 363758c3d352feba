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

from ..progress import Progress, ProgressGenerator
from .split import Footprint, plan_split
from .tiles import (
    TileSpec,
    grid_starts,
    output_shape,
    read_tile,
    resolve_level,
    save_png,
    tissue_fraction,
)

PAIRS_INDEX = "pairs.csv"
SPLIT_NOTE = "split.json"
PAIRS_FIELDS = ["file", "part", "y", "x", "mpp", "ssim", "tissue_fraction"]


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
        About this fraction of kept pairs goes to ``test``: spatial blocks of the slide, with
        every pair that overlaps a held-out pair dropped from training (``split.plan_split``).
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
    from ..metrics import ssim

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


def _common_grid(he_slide, ihc_slide, spec: TileSpec, registered: bool):
    """Level and scale per slide, and the output-pixel grid the pairs are cut on.

    Registered: the H&E grid (the IHC is warped onto it). As given: the common extent.
    """
    he_level, he_scale = resolve_level(he_slide, spec, None)
    ihc_level, ihc_scale = resolve_level(ihc_slide, spec, None)
    out_h, out_w = output_shape(he_slide, he_level, he_scale)
    if not registered:
        ihc_h, ihc_w = output_shape(ihc_slide, ihc_level, ihc_scale)
        out_h, out_w = min(out_h, ihc_h), min(out_w, ihc_w)
    ys = grid_starts(out_h, spec.tile_px, spec.stride_px)
    xs = grid_starts(out_w, spec.tile_px, spec.stride_px)
    grid = [(y, x) for y in ys for x in xs]
    return (he_level, he_scale), (ihc_level, ihc_scale), (out_h, out_w), grid


def _ihc_reader(ihc_slide, ihc_at, registration, spec: TileSpec, out_shape):
    """A function (ty, tx) -> IHC tile on the H&E output grid (warped when registered)."""
    tile_px = spec.tile_px
    if registration is None:
        return lambda ty, tx: read_tile(ihc_slide, *ihc_at, ty, tx, tile_px)[2]
    level = ihc_at[0]
    warped = registration.warp(
        ihc_slide.levels[level], out_shape, spec.mpp, ihc_slide.level_mpp(level), cval=255
    )
    return lambda ty, tx: np.asarray(warped[ty : ty + tile_px, tx : tx + tile_px].compute())


def register_for_pairs(he_slide, ihc_slide):
    """Register the IHC slide onto the H&E slide (the residual-map registration).

    Returns None, i.e. pairs as given, when either slide has no pixel size.
    """
    if he_slide.mpp is None or ihc_slide.mpp is None:
        return None
    from ..registration import register_slides

    return register_slides(he_slide, ihc_slide)


def iter_make_pairs(
    he_slide,
    ihc_slide,
    out_dir: str | Path,
    spec: PairSpec = PairSpec(),
    registration=None,
) -> ProgressGenerator[int]:
    """Cut same-position tiles of two slides, filter by SSIM and write a BCI layout.

    With a ``registration`` (from :func:`register_for_pairs`, IHC = moving) the IHC slide is
    warped onto the H&E grid; without one the slides are taken as given (same origin, same
    physical pixel size after resampling to ``spec.tiles.mpp``). Yields ``Progress`` per grid
    position (``details["kept"]``: pairs kept so far) and returns the number of pairs kept; close
    the generator to cancel. Pairs are written to ``out_dir/{HE,IHC}/pending`` and split at the
    end (:func:`split_pairs`) into ``train``, ``test`` and ``guard`` (pairs that overlap a
    held-out pair, kept out of training); ``out_dir/pairs.csv`` lists them with their part and
    ``out_dir/split.json`` says how the split was made.
    """
    from ..io import open_slide

    he_slide = open_slide(he_slide) if isinstance(he_slide, str | Path) else he_slide
    ihc_slide = open_slide(ihc_slide) if isinstance(ihc_slide, str | Path) else ihc_slide
    out_dir = Path(out_dir)
    index = out_dir / PAIRS_INDEX
    if index.exists():
        raise FileExistsError(f"{index} exists; choose another output folder")
    for sub in ("HE/pending", "IHC/pending"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    if registration is not None and spec.tiles.mpp is None:
        raise ValueError("registered pairs need an output mpp (spec.tiles.mpp)")
    he_at, ihc_at, out_shape, grid = _common_grid(
        he_slide, ihc_slide, spec.tiles, registration is not None
    )
    read_ihc = _ihc_reader(ihc_slide, ihc_at, registration, spec.tiles, out_shape)
    tile_px, rows = spec.tiles.tile_px, []
    with open(index, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PAIRS_FIELDS)
        for done, (ty, tx) in enumerate(grid, start=1):
            _, _, he = read_tile(he_slide, *he_at, ty, tx, tile_px)
            fraction = tissue_fraction(he, spec.tiles.white_level)
            if fraction >= spec.tiles.min_tissue:
                ihc = read_ihc(ty, tx)
                score = pair_ssim(he, ihc)
                if score > spec.ssim_min:
                    name = f"{he_slide.name}_y{ty}_x{tx}.png"
                    save_png(out_dir / "HE" / "pending" / name, he)
                    save_png(out_dir / "IHC" / "pending" / name, ihc)
                    row = [name, "pending", ty, tx, spec.tiles.mpp, round(score, 4), fraction]
                    writer.writerow(row)
                    handle.flush()
                    rows.append(row)
            yield Progress(done, len(grid), f"{len(rows)} kept", {"kept": len(rows)})
    plan = split_pairs(out_dir, rows, he_slide.name, tile_px, spec.test_fraction)
    counts = {part: plan.count(part) for part in ("train", "test", "guard")}
    yield Progress(len(grid), len(grid), plan.describe(), {"kept": len(rows), **counts})
    return len(rows)


def split_pairs(out_dir: Path, rows: list[list], slide: str, tile_px: int, test_fraction: float):
    """Move the pending pairs into ``train`` / ``test`` / ``guard``, rewrite ``pairs.csv`` with
    each pair's part and write ``split.json``; returns the ``split.SplitPlan``.

    Pairs are cut on one output grid, so their footprints are (y, x, tile_px) in output pixels.
    """
    import json

    from ..io.atomic import atomic_open, write_json_atomic

    plan = plan_split([Footprint(slide, 0, r[2], r[3], tile_px) for r in rows], test_fraction)
    for stain in ("HE", "IHC"):
        for part in ("train", "test", "guard"):
            (out_dir / stain / part).mkdir(parents=True, exist_ok=True)
        for row, part in zip(rows, plan.parts, strict=True):
            (out_dir / stain / "pending" / row[0]).replace(out_dir / stain / part / row[0])
        (out_dir / stain / "pending").rmdir()
    with atomic_open(out_dir / PAIRS_INDEX, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PAIRS_FIELDS)
        writer.writerows([r[0], part, *r[2:]] for r, part in zip(rows, plan.parts, strict=True))
    note = {"method": plan.method, "description": f"{plan.describe()}; slide {slide}"}
    write_json_atomic(out_dir / SPLIT_NOTE, json.loads(json.dumps(note)))
    return plan
