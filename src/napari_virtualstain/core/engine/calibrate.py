"""Per-slide calibration: InstanceNorm statistics and the model's own glass colour.

Both are measured once per (slide, model, precision) and kept: in memory for the process,
and next to the disk tile cache when there is one, so reopening a slide (the viewer after a
batch run, a resumed run, a dask worker) measures nothing again.

The glass colour is what the generator paints on this slide's glass. Background tiles are
never sent to the generator; painting them in that colour (instead of white) leaves no step
where a stained tissue tile meets a background tile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

import numpy as np

from .tiling import TileGrid, resize_rgb

log = logging.getLogger(__name__)

_MEMO: dict[str, object] = {}
_MEMO_LOCK = threading.Lock()


def calibration_key(slide_id: str, engine, plan, what: str, n_tiles: int = 0) -> str:
    """Everything that changes a calibration's result, hashed."""
    parts = {
        "what": what,
        "slide": slide_id,
        "model": engine.card.sha256 or engine.card.name,
        "arch": engine.card.arch,
        "precision": engine.precision,
        "level": plan.level,
        "scale": plan.scale,
        "card_tile_px": plan.card_tile_px,
        "norm_sha256": plan.norm_sha256,
        "n_tiles": n_tiles,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _folder(cache_dir) -> Path | None:
    return None if cache_dir is None else Path(cache_dir) / "calibration"


def slide_norm_stats(slide, slide_id: str, engine, plan, tissue, n_tiles: int, cache_dir=None):
    """The slide's InstanceNorm statistics from ``n_tiles`` tissue tiles (memo, then disk)."""
    from ..models import NormStats

    return _memo_then_disk(
        calibration_key(slide_id, engine, plan, "norm", n_tiles),
        _folder(cache_dir), "norm-{}.safetensors",
        load=NormStats.load,
        measure=lambda: gather_norm_stats(engine, norm_tiles(slide, plan, tissue, n_tiles)),
        save=lambda stats, tmp: stats.save(tmp),
    )  # fmt: skip


def glass_rgb(slide, slide_id: str, engine, plan, tissue, cache_dir=None) -> tuple[int, int, int]:
    """The colour the generator paints on this slide's glass (white when there is none).

    One background tile of the card's size is stained; the median of its centre half is the
    colour (the border sees the reflection padding).
    """
    return _memo_then_disk(
        calibration_key(slide_id, engine, plan, "glass"),
        _folder(cache_dir), "glass-{}.json",
        load=lambda path: tuple(int(v) for v in json.loads(path.read_text())["rgb"]),
        measure=lambda: _measure_glass(slide, engine, plan, tissue),
        save=lambda rgb, tmp: tmp.write_text(json.dumps({"rgb": list(rgb)})),
    )  # fmt: skip


def _memo_then_disk(key: str, folder: Path | None, name: str, load, measure, save):
    """A calibration from the process memo, else the disk cache, else measured (and stored)."""
    with _MEMO_LOCK:
        if key in _MEMO:
            return _MEMO[key]
    path = None if folder is None else folder / name.format(key)
    value = None
    if path is not None and path.exists():
        try:
            value = load(path)
        except Exception as err:  # a damaged file is a miss
            log.warning("calibration: unreadable %s (%s); measuring again", path, err)
    if value is None:
        value = measure()
        if path is not None:
            _save_atomic(path, lambda tmp: save(value, tmp))
    with _MEMO_LOCK:
        _MEMO[key] = value
    return value


def _measure_glass(slide, engine, plan, tissue) -> tuple[int, int, int]:
    from .stain import pad_to_multiple

    if tissue is None or tissue.all():
        return (255, 255, 255)
    grid = TileGrid(tuple(slide.levels[plan.level].shape[:2]), plan.tile_px)
    rows, cols = np.nonzero(~tissue)
    # The background tile farthest from any tissue tile: glass, not a faint tissue edge.
    trows, tcols = np.nonzero(tissue)
    if len(trows):
        d = np.min((rows[:, None] - trows) ** 2 + (cols[:, None] - tcols) ** 2, axis=1)
        i = int(np.argmax(d))
    else:
        i = 0
    core = grid.core(int(rows[i]), int(cols[i]))
    side = plan.card_tile_px
    src = side if plan.scale == 1.0 else max(plan.stride_px, round(side / plan.scale))
    h, w = min(src, core.h), min(src, core.w)
    rgb = slide.read_region(plan.level, core.y, core.x, h, w)
    if plan.resampled:
        rgb = resize_rgb(rgb, (max(plan.stride_px, round(h * plan.scale)),) * 2)
    out = engine.stain_batch(pad_to_multiple(rgb, plan.stride_px)[None])[
        0, : rgb.shape[0], : rgb.shape[1]
    ]
    q = out[
        out.shape[0] // 4 : max(1, 3 * out.shape[0] // 4),
        out.shape[1] // 4 : max(1, 3 * out.shape[1] // 4),
    ]
    return tuple(int(v) for v in np.median(q.reshape(-1, 3), axis=0))


def norm_tiles(slide, plan, tissue, n: int) -> np.ndarray:
    """Up to ``n`` evenly spread tissue tiles (model resolution) for per-slide statistics.

    They have the card's training tile size, not the (maybe larger) inference tile: the
    statistics are per-channel moments, and gathering them should cost little.
    """
    side = plan.card_tile_px
    src = side if plan.scale == 1.0 else max(plan.stride_px, round(side / plan.scale))
    grid = TileGrid(tuple(slide.levels[plan.level].shape[:2]), src)

    def in_tissue(t: tuple[int, int]) -> bool:  # looked up on the engine's (coarser) grid
        b = grid.core(*t)
        cy, cx = b.y + b.h // 2, b.x + b.w // 2
        return tissue is None or bool(tissue[cy // plan.tile_px, cx // plan.tile_px])

    cand = [t for t in grid.tiles() if in_tissue(t)] or list(grid.tiles())
    picks = [cand[i] for i in np.linspace(0, len(cand) - 1, min(n, len(cand))).astype(int)]
    tiles = []
    for r, c in dict.fromkeys(picks):
        b = grid.core(r, c)
        rgb = slide.read_region(plan.level, b.y, b.x, src, src)
        tiles.append(resize_rgb(rgb, (side, side)))
    return np.stack(tiles)


def gather_norm_stats(engine, tiles: np.ndarray):
    """Per-slide statistics, gathered at the engine's precision (as fast as staining a tile);
    for int8, whose module is quantised from the float one, at the float precision measured
    fastest here."""
    import torch

    from ..models import collect_norm_stats
    from ..models.device import autocast_dtype

    precision = engine.precision
    if precision == "int8":
        precision = engine.fastest_float_precision().precision
    dtype = autocast_dtype(precision, engine.device)
    with torch.autocast(engine.device.type, dtype=dtype, enabled=dtype is not None):
        return collect_norm_stats(
            engine.module, tiles, engine.device, normalisation=engine.card.normalisation
        )


def calibrate_engine(
    slide, slide_id: str, engine, plan, tissue, norm_stats=None, cache_dir=None, mpp=None
):
    """Everything measured on a slide before its first tile, in order; returns the final
    ``(plan, config, norm_stats)``.

    1. InstanceNorm statistics (``config.norm == "slide"``), fixed (folded) into the engine's
       private copy of the model, which runs in the measured memory layout;
    2. with those, the model's measured halo (``halo.measured_halo``; unless the config sets
       ``halo_px`` or blends): the plan keeps its tiles and takes the smaller halo;
    3. for ``precision="int8"``, the int8 module quantised on this slide's tissue;
    4. the model's own glass colour, unless the config names a background colour.
    """
    from dataclasses import replace

    config = engine.config
    instance_norms = has_instance_norm(engine.module)
    if norm_stats is None and config.norm == "slide" and instance_norms:
        norm_stats = slide_norm_stats(
            slide, slide_id, engine, plan, tissue, config.norm_tiles, cache_dir
        )
    engine.fix_norm_stats(norm_stats)  # a private copy: folded norms, measured layout
    if norm_stats is not None:
        plan = replace(plan, norm_sha256=norm_stats.sha256())
    else:
        plan = replace(plan, norm="tile")
    # With fixed statistics (or none per tile at all) the network is translation-equivariant:
    # tiles can be exact, so a smaller halo can be measured against exact ones.
    equivariant = norm_stats is not None or not instance_norms
    if equivariant and config.halo_px is None and config.blend != "blend":
        plan = with_measured_halo(slide, slide_id, engine, plan, tissue, mpp, cache_dir)
        config = engine.config
    if engine.precision == "int8":
        quantize_on_slide(engine, slide, slide_id, plan, tissue, config.norm_tiles, cache_dir)
    if config.background_rgb is None:
        rgb = glass_rgb(slide, slide_id, engine, plan, tissue, cache_dir)
        config = replace(config, background_rgb=rgb)
        engine.config = config
    return plan, config, norm_stats


def with_measured_halo(slide, slide_id: str, engine, plan, tissue, mpp=None, cache_dir=None):
    """``plan`` with the model's measured halo instead of the exact one, when smaller and when
    it holds on one more probe of this slide (the engine's config then names that halo and
    the tile size, so dask workers reuse them)."""
    from dataclasses import replace

    from .halo import MAX_DIFF, measured_halo
    from .stain import make_plan

    choice = measured_halo(slide, engine, plan, tissue)
    engine.halo_choice = choice
    if choice is None or choice.halo_px >= plan.model_halo_px:
        return plan
    error = slide_halo_error(slide, slide_id, engine, plan, tissue, choice.halo_px, cache_dir)
    if error is not None and error > MAX_DIFF:  # it does not hold here: exact tiles here
        note = (
            f"the model's measured {choice.halo_px} px left {error} grey levels on this "
            "slide's check probe"
        )
        log.warning("halo: %s; exact %d px on this slide", note, plan.model_halo_px)
        engine.halo_choice = replace(choice, halo_px=plan.model_halo_px, note=note)
        return replace(plan, statement=f"{plan.statement}; {engine.halo_choice.statement}")
    checked = "slide too small to check" if error is None else f"{error} on this slide's check"
    choice = engine.halo_choice = replace(choice, note=checked)
    engine.config = replace(
        engine.config, halo_px=choice.halo_px, blend="crop",
        tile_px=engine.config.tile_px or plan.model_tile_px,
    )  # fmt: skip
    new = make_plan(slide, engine, mpp=mpp, norm_sha256=plan.norm_sha256)
    return replace(new, norm=plan.norm, statement=f"{new.statement}; {choice.statement}")


def slide_halo_error(slide, slide_id: str, engine, plan, tissue, halo_px: int, cache_dir=None):
    """Worst grey-level difference of ``halo_px`` tiles from exact ones on one check probe of
    this slide (memo, then disk); None when the slide is too small to probe."""
    from .halo import halo_error, probe_regions

    def measure() -> int | None:
        probes = probe_regions(slide, plan, tissue, plan.model_halo_px, n=1, check=True)
        return None if probes is None else halo_error(engine, probes, plan.model_halo_px, halo_px)

    return _memo_then_disk(
        calibration_key(slide_id, engine, plan, f"halo check {halo_px} of {plan.model_halo_px}"),
        _folder(cache_dir), "halo-{}.json",
        load=lambda path: json.loads(path.read_text())["max_diff"],
        measure=measure,
        save=lambda d, tmp: tmp.write_text(json.dumps({"max_diff": d})),
    )  # fmt: skip


def quantize_on_slide(
    engine, slide, slide_id: str, plan, tissue, n_tiles: int, cache_dir=None
) -> None:
    """Quantise the engine's (norm-fixed) module to int8 on this slide's tissue.

    ``2 * n_tiles`` evenly spread tissue tiles are read and their centre quarters kept (the
    activation ranges and the fp32 comparison need tissue at the model's resolution, not a
    whole training tile: quantising on 16 full 256 px tiles cost 18 s of a 2048 px region's
    37 s). Every other crop calibrates the activation ranges; the rest measure the SSIM
    against fp32 (one serves both only on a slide too small for two). The calibration (the
    observers' states and the SSIM report) is kept like the other calibrations, so a reopened
    slide converts the model again without calibrating (7 s of a 2048 px region's 9 s here).
    """
    import torch

    from ..models.quantize import Int8Calibration, int8_backend

    def measure():
        tiles = norm_tiles(slide, plan, tissue, 2 * n_tiles)
        side = tiles.shape[1]
        crop = max(plan.stride_px, side // 2 // plan.stride_px * plan.stride_px)
        y0 = (side - crop) // 2
        tiles = np.ascontiguousarray(tiles[:, y0 : y0 + crop, y0 : y0 + crop])
        check = tiles[1::2] if len(tiles) > 1 else tiles
        return engine.quantize(tiles[0::2], check)

    what = f"int8 {int8_backend()} torch {torch.__version__}"
    key = calibration_key(slide_id, engine, plan, what, n_tiles)
    calibration = _memo_then_disk(
        key, _folder(cache_dir), "int8-{}.safetensors",
        load=Int8Calibration.load, measure=measure, save=lambda cal, tmp: cal.save(tmp),
    )  # fmt: skip
    if engine.int8_report is not None:  # measured just now
        return
    try:
        engine.load_int8(calibration)
    except ValueError as err:  # a stored calibration that no longer fits: measure again
        log.warning("calibration: %s", err)
        calibration = measure()
        with _MEMO_LOCK:
            _MEMO[key] = calibration
        if cache_dir is not None:
            path = _folder(cache_dir) / f"int8-{key}.safetensors"
            _save_atomic(path, lambda tmp: calibration.save(tmp))


def has_instance_norm(module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.InstanceNorm2d) for m in module.modules())


def _save_atomic(path: Path, save) -> None:
    from ..io.atomic import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save(tmp)
    except OSError as err:
        log.warning("calibration: could not write %s (%s)", path, err)
