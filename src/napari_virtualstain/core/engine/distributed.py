"""Whole slides to OME-Zarr, in one process or on a dask.distributed cluster.

The graph is the lazy pyramid's base level (:class:`~.lazy.VirtualStain`). On a cluster each
task carries only a small picklable spec of the virtual stain (slide path, model name, config,
per-slide normalisation statistics, tissue grid); a worker process rebuilds it once and keeps
it, so the model is loaded once per worker, not once per task (see ``lazy.MODEL_LOADS``).

Interrupted runs resume: finished tiles live in an atomic on-disk tile cache next to the
output (``OUT.tiles-XXXX``, a fresh folder named in the output's marker), so a rerun only
computes what is missing. Only what this tool created is resumed or deleted (see
:mod:`..io.ownership`), and one lock file keeps a second writer away from the same output.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import Progress
from .stain import StainConfig


@dataclass
class StainResult:
    """What a whole-slide run did."""

    out: Path
    tiles_total: int
    tiles_background: int
    tiles_cached_before: int
    seconds: float
    statement: str
    tiles_inferred: int = 0
    events: list[str] = field(default_factory=list)
    tiles_cropped: int = 0

    def summary(self) -> str:
        tissue = self.tiles_total - self.tiles_background
        cropped = f"{self.tiles_cropped} cropped to their tissue, " if self.tiles_cropped else ""
        return (
            f"{self.out}: {self.tiles_total} tiles, {self.tiles_background} background skipped, "
            f"{tissue} tissue ({cropped}{self.tiles_cached_before} resumed from cache) "
            f"in {self.seconds:.1f} s; {self.statement}"
        )


def get_client(scheduler: str):
    """A dask.distributed Client for ``"local:N"`` (a LocalCluster of N processes) or an address.

    Returns the client and the cluster it started (None for an external scheduler).
    """
    from distributed import Client, LocalCluster

    if scheduler.startswith("local:"):
        try:
            n = int(scheduler.split(":", 1)[1])
        except ValueError as err:
            raise ValueError(f"expected local:N with an integer N, got {scheduler!r}") from err
        if n < 1:
            raise ValueError(f"local:N needs N >= 1, got {scheduler!r}")
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        )
        return Client(cluster), cluster
    return Client(scheduler), None


def is_complete_output(path: Path) -> bool:
    """Whether ``path`` is a finished OME-Zarr (its multiscales metadata is written last)."""
    import json

    from ..io.ownership import read_marker

    marker = read_marker(path)
    if marker is not None:
        return marker.get("state") == "complete"
    for meta in (path / ".zattrs", path / "zarr.json"):
        if meta.exists():
            try:
                text = json.loads(meta.read_text())
            except (OSError, ValueError):
                return False
            attrs = text.get("attributes", text) if isinstance(text, dict) else {}
            ome = attrs.get("ome", {}) if isinstance(attrs.get("ome"), dict) else {}
            return "multiscales" in attrs or "multiscales" in ome
    return False


def _check_paths(slide_path: Path | None, out: Path, overwrite: bool) -> str:
    """Decide what to do with ``out``: "fresh", "resume" (our interrupted run) or "replace".

    Only a folder carrying this tool's marker is resumed, or replaced with ``overwrite``. A
    non-empty folder without the marker (the user's own OME-Zarr, picked in a save dialog) is
    refused even with ``overwrite``, and so is one of ours holding more than an image.
    """
    from ..io.ownership import check_replaceable, read_marker

    if slide_path is not None:
        src = slide_path.resolve()
        dst = out.resolve()
        if dst == src or src in dst.parents or dst in src.parents:
            raise ValueError(f"output {out} would overwrite or sit inside the input {slide_path}")
    if not out.exists() and not out.is_symlink():
        return "fresh"
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return "empty"  # a folder the user made for the output: written into, never removed
    marker = read_marker(out) if out.is_dir() else None
    if marker is not None and marker.get("state") != "complete" and not overwrite:
        return "resume"
    if not overwrite:
        if marker is not None:  # ours; a foreign image must not be told to use overwrite
            raise FileExistsError(
                f"{out} already exists and is complete (use --overwrite, or overwrite=True in "
                "Python, to redo it)"
            )
        raise FileExistsError(
            f"{out} exists and was not written by virtualstain; refusing to touch it, even with "
            "overwrite. Choose another output"
        )
    check_replaceable(out)  # refuses (deleting nothing) a folder without our marker
    return "replace"


def _refuse_greyscale(slide) -> None:
    """A stain model maps colour to colour: a grey slide would come out as 'background'."""
    from ..io.pixels import is_colourless

    if "greyscale" in getattr(slide, "notes", "") or is_colourless(slide):
        raise ValueError(
            f"{slide.path}: the image has no colour (greyscale); virtual staining needs a "
            "brightfield RGB slide (H&E or Ki-67 IHC)"
        )


def _scratch_for(out: Path, state: str) -> tuple[Path, bool]:
    """The tile scratch folder: the interrupted run's (named in the marker) or a new one.

    Returns the folder and whether it belongs to this tool (and may be deleted when done).
    """
    from ..io.ownership import is_scratch, make_scratch, read_marker

    if state == "resume":
        name = (read_marker(out) or {}).get("scratch")
        if (
            isinstance(name, str)
            and "/" not in name
            and "\\" not in name
            and name not in (".", "..")
        ):
            folder = out.parent / name
            if folder.is_dir() and is_scratch(folder):
                return folder, True
    return make_scratch(out), True


def stain_slide(
    slide,
    model,
    out: str | Path,
    config: StainConfig | None = None,
    mpp: float | None = None,
    cache_dir: str | Path | None = None,
    keep_cache: bool = False,
    scheduler: str | None = None,
    overwrite: bool = False,
    n_levels: int | None = None,
    memory_budget_bytes: int = 256 << 20,
    progress: Callable[[Progress], None] | None = None,
    on_event: Callable[[str], None] | None = None,
    source_check=None,
    **overrides,
) -> StainResult:
    """Stain every tissue tile of ``slide`` and write an OME-Zarr pyramid with provenance.

    ``source_check``: the verdict of ``source_stain.verify_source_stain``, kept in the
    output's provenance.

    Parameters
    ----------
    slide : Slide or path
    model : str, Path or LoadedModel
        A name or path is required with ``scheduler`` (workers load it themselves).
    out : path
        The ``.zarr`` folder to write. Never the input; a finished one is refused unless
        ``overwrite``; a partial one written by this tool (an interrupted run) is resumed;
        a non-empty folder this tool did not write (no marker) is refused, even with
        ``overwrite``, and nothing in it is deleted.
    cache_dir : path, optional
        Tile cache shared with the viewer, never deleted. Default: a new folder
        ``OUT.tiles-XXXX`` beside ``out``, removed after success unless ``keep_cache`` and
        after a failure that left no tiles in it.
    scheduler : str, optional
        ``"local:N"`` or a dask.distributed scheduler address.
    progress : callable, optional
        Called with a ``core.progress.Progress`` of chunks written.
    """
    import dask

    from ..io import open_slide
    from ..io.ownership import output_lock
    from .source_stain import provenance_of

    t0 = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        # Opening reads metadata and a low level here, never through a cluster client that a
        # caller may have made the process default.
        with dask.config.set(scheduler="threads"):
            if not hasattr(slide, "levels"):
                slide = open_slide(slide)
            slide_path = Path(str(slide.path)) if getattr(slide, "format", "") else None
            _refuse_greyscale(slide)
            state = _check_paths(slide_path, out, overwrite)
        if cache_dir is not None:
            cache_dir, own_cache = Path(cache_dir), False  # the user's: never deleted
        else:
            cache_dir, own_cache = _scratch_for(out, state)
        try:
            return _run(
                slide, model, out, config, mpp, cache_dir, scheduler, n_levels,
                memory_budget_bytes, progress, on_event, overrides, t0,
                marker={"scratch": cache_dir.name} if own_cache else {},
                clean_scratch=own_cache and not keep_cache,
                provenance=provenance_of(source_check),
            )  # fmt: skip
        except BaseException as err:
            _tidy_after_failure(out, state, cache_dir if own_cache else None)
            if isinstance(err, OSError) and err.strerror and not err.filename:
                # e.g. a full disk inside zarr's store: say which output it was
                raise OSError(err.errno, err.strerror, str(out)) from err
            raise


def _tidy_after_failure(out: Path, state: str, scratch: Path | None) -> None:
    """Leave no litter: keep the scratch only when the output names it and it holds work.

    A run that dies before writing its output (so nothing could resume from the scratch) or
    before computing anything removes the scratch, and a fresh output with it.
    """
    from ..io.ownership import read_marker, scratch_is_empty

    if scratch is None or not scratch.is_dir():
        return
    marker = read_marker(out) if out.is_dir() else None
    named = marker is not None and marker.get("scratch") == scratch.name
    if named and not scratch_is_empty(scratch):
        return  # tiles to resume from: keep them, and the output that names them
    shutil.rmtree(scratch, ignore_errors=True)
    if state == "fresh" and marker is not None:
        shutil.rmtree(out, ignore_errors=True)


def _run(
    slide, model, out, config, mpp, cache_dir, scheduler, n_levels, memory_budget_bytes,
    progress, on_event, overrides, t0, marker, clean_scratch, provenance,
) -> StainResult:  # fmt: skip
    import dask

    from ..io import write_ome_zarr
    from .cache import DiskCache, MemoryLRU, TileCache
    from .lazy import open_virtual_stain

    with dask.config.set(scheduler="threads"):
        cache = TileCache(MemoryLRU(memory_budget_bytes), DiskCache(cache_dir))
        vs = open_virtual_stain(
            slide, model, config=config, mpp=mpp, cache=cache, cache_dir=str(cache_dir),
            on_event=on_event, **overrides,
        )  # fmt: skip
    if scheduler is not None and vs.spec is None:
        raise ValueError("a cluster needs the slide as a file and the model as a name or path")
    cached_before = cache.disk.count(vs.namespace, vs.plan.level)
    n_bg = vs.metadata["tiles"]["background"]
    mpp_out = vs.plan.level_mpp
    metadata = {**vs.metadata, "resumed_tiles": cached_before, "scheduler": scheduler, **provenance}
    with _scheduler(scheduler):
        write_ome_zarr(
            out, vs.levels[0], mpp=mpp_out, name=vs.name, metadata=metadata,
            n_levels=n_levels, progress=progress, overwrite=True, marker=marker,
        )  # fmt: skip
    if clean_scratch:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return StainResult(
        out=out,
        tiles_total=vs.grid.n_tiles,
        tiles_background=n_bg,
        tiles_cached_before=cached_before,
        seconds=time.perf_counter() - t0,
        statement=f"{vs.plan.statement}; {vs.engine.precision} ({vs.engine.precision_reason})",
        tiles_inferred=vs.engine.tiles_inferred,
        events=list(vs.engine.events),
        tiles_cropped=vs.metadata["tiles"]["cropped_to_tissue"],
    )


@contextlib.contextmanager
def _scheduler(scheduler: str | None):
    import dask

    if scheduler is None:
        # Threads overlap slide reading and zarr writing with inference (the engine itself
        # runs one batch at a time).
        with dask.config.set(scheduler="threads"):
            yield
        return
    client, cluster = get_client(scheduler)
    try:
        with dask.config.set(scheduler=client):
            yield
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _model_loads() -> int:
    # Module level, so workers import it by reference (a nested function would be pickled by value).
    from . import lazy

    return lazy.MODEL_LOADS["count"]


def worker_model_loads(client) -> dict[str, int]:
    """How many times each worker process loaded a model (for tests and diagnostics)."""
    return client.run(_model_loads)
