"""The halo a model needs, measured: the smallest one whose tiles match exact tiles.

A tile is exact when its halo covers the generator's whole receptive field (``rf / 2``; with
per-slide norm statistics the network is then translation-equivariant). A trained ResNet's
output hardly depends on its farthest inputs, though: on the demo generator a 64 px halo gave
at most one grey level of difference from its exact 184 px halo. A smaller halo is fewer
pixels per tile (784 px tiles: 1.26x their core with a 48 px halo, 1.5x with 88 px).

``measured_halo`` stains a few tissue probes with the exact halo and with smaller candidates
(fp32, the slide's fixed norms) and keeps the candidate after the smallest one whose core
differs from the exact one by at most ``MAX_DIFF`` grey levels on every probe (that one
candidate of margin, because probes are not the whole slide). The answer is a property of the
weights: it is kept per model and torch version in the user cache (``halos.json``), next to
the precision choice, and in the provenance (the plan's statement).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger(__name__)

CACHE_FILE = "halos.json"
MAX_DIFF = 1  # grey levels (uint8) between a measured-halo tile and the exact tile
CANDIDATE_FRACTIONS = (0.25, 0.375, 0.5, 0.625, 0.75)  # of the exact halo, smallest first
PROBE_CORE_PX = 64
N_PROBES = 3

_MEMO: dict[str, HaloChoice] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class HaloChoice:
    """The halo kept, the exact one, and the worst difference measured at each candidate."""

    halo_px: int
    exact_px: int
    max_diff: dict[str, int]
    n_probes: int
    note: str = ""  # this slide's check (see ``calibrate.with_measured_halo``)

    @property
    def statement(self) -> str:
        if self.halo_px >= self.exact_px:
            return f"halo exact ({self.exact_px} px)" + (f": {self.note}" if self.note else "")
        return (
            f"halo {self.halo_px} px measured: at most {self.max_diff[str(self.halo_px)]} grey "
            f"level(s) from exact {self.exact_px} px tiles on {self.n_probes} tissue probes"
            + (f"; {self.note}" if self.note else "")
        )


def candidates(exact_px: int, stride_px: int) -> list[int]:
    """Halos to try, on the stride, smallest first, all below ``exact_px``."""
    out = {int(np.ceil(exact_px * f / stride_px) * stride_px) for f in CANDIDATE_FRACTIONS}
    return sorted(h for h in out if 0 < h < exact_px)


def measure_halo(engine, probes: np.ndarray, exact_px: int) -> HaloChoice:
    """The candidate after the smallest one within ``MAX_DIFF`` of exact tiles on every probe
    (the exact halo when none is, or when the first to pass is the largest candidate).

    ``probes`` are (N, c + 2 exact, c + 2 exact, 3) uint8 regions at the model's resolution;
    the engine's module must have its norms fixed. Runs in fp32 so that the comparison sees
    the halo, not reduced-precision rounding.
    """
    e = exact_px
    ref = _cores(engine, probes, e, e)
    max_diff: dict[str, int] = {str(e): 0}
    chosen, passed = e, False
    for h in candidates(e, engine.stride_px):
        diff = int(np.abs(_cores(engine, probes, e, h) - ref).max())
        max_diff[str(h)] = diff
        if diff <= MAX_DIFF and passed:
            chosen = h
            break
        # One candidate of margin: the first to pass on the probes kept 2 grey levels
        # elsewhere on a small random model; the next one kept 1.
        passed = passed or diff <= MAX_DIFF
    return HaloChoice(halo_px=chosen, exact_px=e, max_diff=max_diff, n_probes=len(probes))


def halo_error(engine, probes: np.ndarray, exact_px: int, halo_px: int) -> int:
    """Worst grey-level difference of ``halo_px`` tiles from exact ones on ``probes``."""
    ref = _cores(engine, probes, exact_px, exact_px)
    return int(np.abs(_cores(engine, probes, exact_px, halo_px) - ref).max())


def _cores(engine, probes: np.ndarray, exact_px: int, halo_px: int) -> np.ndarray:
    """The probes' cores (int16) stained in fp32 with ``halo_px`` of context."""
    from ..models.inference import infer_tiles

    e, h = exact_px, halo_px
    c = probes.shape[1] - 2 * e
    x = np.ascontiguousarray(probes[:, e - h : e + c + h, e - h : e + c + h])
    out = infer_tiles(engine.module, x, engine.device, "fp32",
                      normalisation=engine.card.normalisation,
                      channels_last=engine.channels_last)  # fmt: skip
    return out[:, h : h + c, h : h + c].astype(np.int16)


def probe_regions(
    slide, plan, tissue, exact_px: int, n: int = N_PROBES, check: bool = False
) -> np.ndarray | None:
    """Up to ``n`` tissue regions of ``PROBE_CORE_PX + 2 exact_px`` at the model's resolution,
    centred on tissue tiles spread over the slide (first, middle, last for three); ``check``:
    one region a quarter of the way through the tissue tiles, where the measurement did not
    look. None when the slide is too small for one."""
    from .tiling import TileGrid, resize_rgb

    side = PROBE_CORE_PX + 2 * exact_px
    src = side if plan.scale == 1.0 else int(np.ceil(side / plan.scale))
    h, w = slide.levels[plan.level].shape[:2]
    if h < src or w < src:
        return None
    grid = TileGrid((h, w), plan.tile_px)
    tiles = [t for t in grid.tiles() if tissue is None or tissue[t]] or list(grid.tiles())
    spread = np.linspace(0, len(tiles) - 1, min(n, len(tiles))).astype(int)
    picks = [tiles[len(tiles) // 4]] if check else [tiles[i] for i in spread]
    out = []
    for r, c in dict.fromkeys(picks):
        core = grid.core(r, c)
        y = int(np.clip(core.y + core.h // 2 - src // 2, 0, h - src))
        x = int(np.clip(core.x + core.w // 2 - src // 2, 0, w - src))
        out.append(resize_rgb(slide.read_region(plan.level, y, x, src, src), (side, side)))
    return np.stack(out)


def measured_halo(slide, engine, plan, tissue) -> HaloChoice | None:
    """The model's measured halo (process memo, then ``halos.json``, else measured here on
    this slide's tissue); None when the slide is too small to probe."""
    import torch

    from ..models.precision import read_cache_json, user_cache_dir, write_cache_json

    card = engine.card
    exact = plan.model_halo_px
    key = json.dumps(
        [card.sha256, card.name, card.arch, card.arch_kwargs, card.normalisation, exact,
         engine.stride_px, MAX_DIFF, N_PROBES, "margin 1", f"torch {torch.__version__}"],
        sort_keys=True,
    )  # fmt: skip
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
    path = user_cache_dir() / CACHE_FILE
    known = read_cache_json(path) if card.sha256 else {}  # weights without a digest: not kept
    choice = None
    if isinstance(known.get(key), dict):
        try:
            choice = HaloChoice(**known[key])
        except TypeError:
            choice = None  # an older layout: measure again
    if choice is None:
        probes = probe_regions(slide, plan, tissue, exact)
        if probes is None:
            return None
        choice = measure_halo(engine, probes, exact)
        log.info("halo: %s", choice.statement)
        if card.sha256:
            write_cache_json(path, {**read_cache_json(path), key: asdict(choice)})
    with _LOCK:
        _MEMO[key] = choice
    return choice
