"""The lazy virtual-stain pyramid: tiles computed on demand, cached, assembled seam-free.

:class:`VirtualStain` has the source slide's levels from the level the model runs on
(``plan.level``) upwards. Its base level is a dask array whose blocks are the tile grid's
core tiles; computing a block reads the tile plus its halo from the slide, runs the engine
(tissue tiles only) and caches the result. Coarser levels are built only from tiles already
computed; everything else is a grey/white checkerboard: "not yet computed", never wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import dask.array as da
import numpy as np

from ..progress import CancelToken
from .cache import TileCache, TileKey, shared_cache
from .calibrate import calibrate_engine
from .provenance import build_provenance, slide_identity
from .stain import StainConfig, StainEngine, make_plan, pad_to_multiple
from .tiling import Box, TileGrid, blend_weights, checker, map_box, resize_rgb, round_up
from .tissue import count_cropped, crop_digest, grid_tissue

_PROCESS_MODELS: dict[str, object] = {}
_PROCESS_STAINS: dict[str, VirtualStain] = {}
_PROCESS_LOCK = threading.Lock()
MODEL_LOADS = {"count": 0}  # per process; the distributed test reads it on each worker


def load_model_cached(model: str, device: str = "auto"):
    """Load a model once per process (a dask worker reuses it for every task)."""
    from ..models import load_model

    key = f"{model}|{device}"
    with _PROCESS_LOCK:
        if key not in _PROCESS_MODELS:
            dev = None if device == "auto" else device
            _PROCESS_MODELS[key] = load_model(model, device=dev)
            MODEL_LOADS["count"] += 1
        return _PROCESS_MODELS[key]


class VirtualStain:
    """A lazy virtual-stain pyramid over a slide (build it with :func:`open_virtual_stain`).

    Attributes
    ----------
    levels : list of dask.array.Array
        (y, x, 3) uint8; ``levels[0]`` is the source level ``plan.level``.
    source_levels : list of int
        The source slide level of each entry of ``levels``.
    downsamples : list of float
        Source-level-0 pixels per pixel of each entry of ``levels``.
    grid : TileGrid
        The tile grid on the base level.
    tissue : np.ndarray or None
        (n_rows, n_cols) bool; False tiles are painted as background without the generator.
    name, metadata : str, dict
        Layer name (labelled PREVIEW when the plan is a preview) and provenance.
    """

    def __init__(
        self, slide, engine: StainEngine, plan, cache: TileCache, tissue, spec=None, crops=None
    ):
        self.slide, self.engine, self.plan, self.cache = slide, engine, plan, cache
        self.tissue, self.crops = tissue, crops
        self.spec = spec
        self.grid = TileGrid(
            tuple(slide.levels[plan.level].shape[:2]), plan.tile_px, plan.halo_px, plan.blend_px
        )
        bg = engine.config.background_rgb
        # Precision changes pixels (bf16 vs fp32); the device only by float rounding, so tiles
        # from a GPU batch run are served to a CPU viewer.
        self.namespace = plan.namespace(slide_identity(slide), bg, engine.precision)
        self.namespace += crop_digest(crops)  # cropped tiles hold glass outside the tissue
        self.side_px = plan.tile_px + 2 * plan.blend_px
        self._skipped: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self.source_levels = list(range(plan.level, len(slide.levels)))
        self.downsamples = [float(slide.downsamples[k]) for k in self.source_levels]
        self.levels = [self._level_array(i) for i in range(len(self.source_levels))]
        card = engine.card
        self.name = f"virtual {card.target_stain} ({card.name})"
        if plan.preview:
            self.name += " [PREVIEW]"
        n_bg = 0 if tissue is None else int((~tissue).sum())
        self.metadata = build_provenance(
            card=card,
            plan=plan,
            device=str(engine.device),
            precision=engine.precision,
            precision_reason=engine.precision_reason,
            slide=slide,
            extra={
                "preview": plan.preview,
                "tiles": {
                    "total": self.grid.n_tiles,
                    "background": n_bg,
                    "cropped_to_tissue": count_cropped(crops, self.grid),
                },
                "blend": plan.mode,
                "norm_stats": {"mode": plan.norm, "sha256": plan.norm_sha256},
                "int8": engine.int8_report and engine.int8_report.to_dict(),
                "memory_format": {
                    "channels_last": engine.channels_last,
                    "reason": engine.layout_reason,
                },
            },
        )

    def __reduce__(self):
        if self.spec is None:
            raise TypeError(
                "this VirtualStain was built from an in-memory slide or model; open it from "
                "a slide path and a model name/path to send it to dask.distributed workers"
            )
        # Workers (and the scheduler, which only deserialises) get a light handle that opens
        # the virtual stain on first use, once per process.
        return VirtualStainHandle, (self.spec,)

    # -- tiles -----------------------------------------------------------------------------
    def key(self, row: int, col: int) -> TileKey:
        return TileKey(self.namespace, self.plan.level, row, col, self.side_px)

    def is_tissue(self, row: int, col: int) -> bool:
        return self.tissue is None or bool(self.tissue[row, col])

    @property
    def tiles_skipped(self) -> int:
        """Background tiles served so far without the generator."""
        return len(self._skipped)

    def _available(self, row: int, col: int) -> bool:
        # Background is painted on demand, never cached: it costs nothing to redo.
        return not self.is_tissue(row, col) or self.cache.contains(self.key(row, col))

    def block_ready(self, row: int, col: int) -> bool:
        """Whether every tile contributing to this block is cached (or background)."""
        return all(self._available(*n) for n in self.grid.neighbours(row, col))

    def compute(
        self,
        tiles: list[tuple[int, int]],
        cancel: CancelToken | None = None,
    ) -> Iterator[list[tuple[int, int, np.ndarray]]]:
        """Compute blocks in the given order; yield ``[(row, col, block), ...]`` as they finish.

        Tiles already cached cost nothing; background tiles are painted, never inferred.
        ``cancel`` is checked between batches (then ``Cancelled`` is raised).
        """
        pending = list(dict.fromkeys(tiles))
        needed = list(dict.fromkeys(n for t in pending for n in self.grid.neighbours(*t)))
        self._skipped.update(t for t in needed if not self.is_tissue(*t))
        missing = [t for t in needed if not self._available(*t)]
        for batch in self._batches(missing):
            if cancel is not None:
                cancel.raise_if_cancelled()
            self._predict(batch, cancel)
            done = [t for t in pending if self.block_ready(*t)]
            if done:
                pending = [t for t in pending if t not in done]
                yield [(r, c, self.block(r, c)) for r, c in done]
        if pending:
            yield [(r, c, self.block(r, c)) for r, c in pending]

    def _batches(self, tiles: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
        """Consecutive runs of tiles sharing a padded shape, at most ``batch_size`` long."""
        run: list[tuple[int, int]] = []
        shape = None
        for t in tiles:
            s = self._boxes(*t)[0].shape
            if run and (s != shape or len(run) >= self.engine.batch_size):
                yield run
                run = []
            run.append(t)
            shape = s
        if run:
            yield run

    def _predict(self, tiles: list[tuple[int, int]], cancel: CancelToken | None = None) -> None:
        with self._lock:  # two dask threads wanting one tile compute it once
            tiles = [t for t in tiles if not self._available(*t)]
            if not tiles:
                return
            boxes, keeps = zip(*(self._boxes(*t) for t in tiles), strict=True)
            h, w = boxes[0].h, boxes[0].w
            lv = self.plan.level
            x = np.stack([self.slide.read_region(lv, b.y, b.x, b.h, b.w) for b in boxes])
            m = self.plan.stride_px
            if self.plan.resampled:
                s = self.plan.scale
                hw = (round_up(h * s, m), round_up(w * s, m))
                x = np.stack([resize_rgb(t, hw) for t in x])
            else:
                x = np.stack([pad_to_multiple(t, m) for t in x])
            y = self.engine.stain_batch(x, cancel)
            for t, box, keep, out in zip(tiles, boxes, keeps, y, strict=True):
                out = resize_rgb(out, (h, w)) if self.plan.resampled else out[:h, :w]
                contribution = self.grid.contribution(*t)
                if keep != contribution:  # a tissue crop: glass around it
                    tile = np.empty((contribution.h, contribution.w, 3), np.uint8)
                    tile[:] = self.engine.config.background_rgb
                    tile[keep.relative_to(contribution)] = out[keep.relative_to(box)]
                    out, box = tile, contribution
                self.cache.put(self.key(*t), out[contribution.relative_to(box)])

    def _boxes(self, row: int, col: int) -> tuple[Box, Box]:
        """What the generator reads for a tile, and the part of its contribution it gives:
        all of it, or for a tissue crop the crop and its blend band (same context, so the
        same pixels as the whole tile there)."""
        contribution = self.grid.contribution(row, col)
        crop = None if self.crops is None else Box(*(int(v) for v in self.crops[row, col]))
        if crop is None or crop == self.grid.core(row, col):
            return self.grid.padded(row, col), contribution
        shape = self.grid.shape_px
        keep = crop.grown(self.plan.blend_px, shape).intersect(contribution)
        return crop.grown(self.plan.halo_px, shape), keep

    def block(self, row: int, col: int) -> np.ndarray:
        """The finished core tile (computing whatever it still needs)."""
        if not self.block_ready(row, col):
            for _ in self.compute([(row, col)]):
                pass
        core = self.grid.core(row, col)
        if self.plan.blend_px == 0:
            return np.asarray(self._get(row, col))
        # Blended blocks are kept too (memory only), so panning back costs no re-blending.
        bkey = TileKey(self.namespace + ":block", self.plan.level, row, col, self.plan.tile_px)
        done = self.cache.memory.get(bkey)
        if done is not None:
            return done
        acc = np.zeros((core.h, core.w, 3), np.float32)
        wsum = np.zeros((core.h, core.w, 1), np.float32)
        for n in self.grid.neighbours(row, col):
            cb = self.grid.contribution(*n)
            inter = cb.intersect(core)
            if inter is None:
                continue
            wts = blend_weights(self.grid, *n)[inter.relative_to(cb)][..., None]
            acc[inter.relative_to(core)] += wts * self._get(*n)[inter.relative_to(cb)]
            wsum[inter.relative_to(core)] += wts
        out = np.clip(np.round(acc / wsum), 0, 255).astype(np.uint8)
        self.cache.memory.put(bkey, out)
        return out

    def _get(self, row: int, col: int) -> np.ndarray:
        if not self.is_tissue(row, col):
            self._skipped.add((row, col))
            b = self.grid.contribution(row, col)
            fill = np.empty((b.h, b.w, 3), np.uint8)
            fill[:] = self.engine.config.background_rgb
            return fill
        tile = self.cache.get(self.key(row, col))
        if tile is None:  # evicted between the readiness check and now
            self._predict([(row, col)])
            tile = self.cache.get(self.key(row, col))
        return tile

    # -- pyramid ---------------------------------------------------------------------------
    def computed_fraction(self) -> float:
        """Share of base-level blocks that are ready."""
        ready = sum(self.block_ready(r, c) for r, c in self.grid.tiles())
        return ready / self.grid.n_tiles

    def coarse_region(self, index: int, box: Box) -> np.ndarray:
        """A region of ``levels[index]`` from computed tiles only; the rest is checkered."""
        ds = self.downsamples[index] / self.downsamples[0]
        out = checker(box.h, box.w)
        base_box = map_box(box, ds, 1.0)
        for r, c in self.grid.tiles_in_box(base_box):
            if not self.block_ready(r, c):
                continue
            core = self.grid.core(r, c)
            small = map_box(core, 1.0, ds).clip(self.levels[index].shape)
            inter = small.intersect(box) if small is not None else None
            if inter is None:
                continue
            pixels = resize_rgb(self.block(r, c), (small.h, small.w))
            out[inter.relative_to(box)] = pixels[inter.relative_to(small)]
        return out

    def _level_array(self, index: int) -> da.Array:
        shape = tuple(self.slide.levels[self.source_levels[index]].shape[:2])
        grid = TileGrid(shape, self.plan.tile_px)
        name = f"virtualstain-{self.namespace}-{index}"
        dsk = {}
        for r, c in grid.tiles():
            if index == 0:
                dsk[(name, r, c, 0)] = (_base_block, self, r, c)
            else:
                dsk[(name, r, c, 0)] = (_coarse_block, self, index, grid.core(r, c))
        return da.Array(dsk, name, chunks=(*grid.chunks, (3,)), dtype=np.uint8)


class VirtualStainHandle:
    """The pickled form of a :class:`VirtualStain`: a spec, opened once per process on use."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec

    def __reduce__(self):
        return VirtualStainHandle, (self.spec,)

    def block(self, row: int, col: int) -> np.ndarray:
        return _restore(self.spec).block(row, col)

    def coarse_region(self, index: int, box: Box) -> np.ndarray:
        return _restore(self.spec).coarse_region(index, box)


def _base_block(vs: VirtualStain, row: int, col: int) -> np.ndarray:
    import dask

    # Reads inside a task stay in this thread: on a cluster the default scheduler would be
    # the worker's client, which would ship the slide's file handles over the network.
    with dask.config.set(scheduler="synchronous"):
        return vs.block(row, col)


def _coarse_block(vs: VirtualStain, index: int, box: Box) -> np.ndarray:
    import dask

    with dask.config.set(scheduler="synchronous"):
        return vs.coarse_region(index, box)


def _restore(spec: dict) -> VirtualStain:
    from hashlib import sha256

    key = sha256(repr(sorted((k, repr(v)) for k, v in spec.items())).encode()).hexdigest()
    with _PROCESS_LOCK:
        vs = _PROCESS_STAINS.get(key)
    if vs is None:
        vs = open_virtual_stain(**spec)
        with _PROCESS_LOCK:
            vs = _PROCESS_STAINS.setdefault(key, vs)
    return vs


def open_virtual_stain(
    slide,
    model,
    config: StainConfig | None = None,
    mpp: float | None = None,
    cache: TileCache | None = None,
    cache_dir: str | None = None,
    norm_stats=None,
    tissue=None,
    crops=None,
    on_event=None,
    **overrides,
) -> VirtualStain:
    """Open the lazy virtual stain of ``slide`` with ``model``.

    Parameters
    ----------
    slide : Slide or path
    model : str, Path or LoadedModel
        A registry name or checkpoint path (loaded once per process), or a loaded model.
    config : StainConfig, optional
        Engine settings; keyword ``overrides`` replace single fields (``tile_px=512``).
    mpp : float, optional
        Level-0 µm/px when the slide does not state it.
    cache, cache_dir : optional
        The tile cache (default: the process-wide memory LRU, plus ``cache_dir`` on disk).
    norm_stats : NormStats, optional
        Per-slide InstanceNorm statistics; gathered from tissue tiles when ``config.norm`` is
        "slide" and none are given.
    tissue, crops : np.ndarray, optional
        Precomputed (n_rows, n_cols) tissue grid and (n_rows, n_cols, 4) tissue crops
        (:func:`~.tissue.grid_tissue`; workers reuse the client's).
    """
    from ..io import open_slide

    config = replace(config or StainConfig(), **overrides)
    spec = None
    if not hasattr(slide, "levels"):
        slide = open_slide(slide)
    if isinstance(model, str | bytes) or hasattr(model, "__fspath__"):
        model_spec = str(model)
        loaded = load_model_cached(model_spec, config.device)
    else:
        model_spec, loaded = None, model
    engine = StainEngine(loaded, config, on_event=on_event)
    plan = make_plan(slide, engine, mpp=mpp)
    grid = TileGrid(tuple(slide.levels[plan.level].shape[:2]), plan.tile_px)
    if tissue is None and config.tissue is not None:
        tissue, crops = grid_tissue(slide, config.tissue, grid, plan.level, plan.stride_px)
    ident = slide_identity(slide)
    if cache_dir is None and cache is not None and cache.disk is not None:
        cache_dir = str(cache.disk.root)  # calibrations live next to the tiles
    plan, config, norm_stats = calibrate_engine(
        slide, ident, engine, plan, tissue, norm_stats, cache_dir, mpp
    )
    engine.tiles_inferred, engine.seconds_inferring = 0, 0.0  # count tiles, not calibrations
    if cache is None:
        cache = shared_cache(cache_dir)
    if model_spec is not None and slide.path is not None and getattr(slide, "format", ""):
        # The precision this process chose, not "auto" again on each worker: a worker under
        # other load measured bf16 where this one kept fp32, and its tiles differed by up to 10
        # grey levels from the provenance's precision (24 % of the pixels, local:2).
        spec = dict(
            slide=str(slide.path), model=model_spec,
            config=replace(config, precision=engine.precision), mpp=mpp,
            cache_dir=cache_dir, norm_stats=norm_stats, tissue=tissue, crops=crops,
        )  # fmt: skip
    return VirtualStain(slide, engine, plan, cache, tissue, spec=spec, crops=crops)


def stain_image(loaded_model, rgb: np.ndarray, mpp: float | None = None, **kwargs) -> np.ndarray:
    """Stain an in-memory (y, x, 3) uint8 image through the tiled engine; returns uint8 RGB."""
    import dask.array as da

    from ..io import Slide

    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (y, x, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    slide = Slide(
        path=None, name="image", levels=[da.from_array(rgb, chunks=(1024, 1024, 3))], mpp=mpp
    )
    vs = open_virtual_stain(slide, loaded_model, **kwargs)
    return np.asarray(vs.levels[0].compute(scheduler="synchronous"))
