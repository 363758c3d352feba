"""``virtualstain stain SLIDE... --out-dir DIR``: many slides in one run.

One dask cluster serves every slide (``--scheduler local:N`` is started once, its workers keep
their loaded model), each slide goes to ``DIR/<name>.zarr`` with the single-slide rules
(an interrupted one resumes, a finished one is skipped unless ``--overwrite``), a failed slide
does not stop the others, and a summary table ends the run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from .progress import tqdm_progress


@dataclass(frozen=True)
class SlideRow:
    """One line of the summary table."""

    slide: str
    tiles: str
    seconds: float
    output: str
    status: str


def stain_many(slides, out_dir: Path | None, model: str, config, *, mpp, cache_dir, keep_cache,
               scheduler, overwrite, quiet, force=False) -> list[SlideRow]:  # fmt: skip
    """Stain ``slides`` into ``out_dir``; returns the table rows (raises if any slide failed).

    Every output and every slide's stain are checked before the first slide is stained.
    """
    from napari_virtualstain.core.engine.distributed import is_complete_output, stain_slide
    from napari_virtualstain.core.io.slide import display_name

    from . import describe_error

    if out_dir is None:
        raise click.UsageError("several slides need --out-dir DIR (one NAME.zarr each)")
    outs = [Path(out_dir) / f"{display_name(Path(s))}.zarr" for s in slides]
    if len(set(outs)) != len(outs):
        raise click.UsageError("two slides have the same name; they would share an output")
    checks = _check_all(slides, outs, model, overwrite, force)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    rows: list[SlideRow] = []
    with _shared(scheduler) as address:
        for slide, out, check in zip(slides, outs, checks, strict=True):
            t0 = time.perf_counter()
            if is_complete_output(out) and not overwrite:
                rows.append(SlideRow(str(slide), "-", 0.0, str(out), "done before (skipped)"))
                continue
            try:
                with tqdm_progress(Path(slide).name, quiet, unit="chunk") as on_progress:
                    result = stain_slide(
                        slide, model, out, config=config, mpp=mpp,
                        cache_dir=None if cache_dir is None else Path(cache_dir) / out.stem,
                        keep_cache=keep_cache, scheduler=address, overwrite=overwrite,
                        progress=on_progress, source_check=check,
                        on_event=lambda msg, s=slide: click.echo(f"warning: {s}: {msg}", err=True),
                    )  # fmt: skip
            except KeyboardInterrupt:
                rows.append(SlideRow(str(slide), "-", time.perf_counter() - t0, str(out),
                                     "interrupted (rerun to resume)"))  # fmt: skip
                echo_table(rows)
                raise
            except Exception as err:  # noqa: BLE001 - one bad slide must not stop the others
                rows.append(SlideRow(str(slide), "-", time.perf_counter() - t0, str(out),
                                     f"failed: {describe_error(err)}"))  # fmt: skip
                continue
            tiles = f"{result.tiles_total - result.tiles_background}/{result.tiles_total}"
            resumed = (
                f", {result.tiles_cached_before} resumed" if result.tiles_cached_before else ""
            )
            rows.append(SlideRow(str(slide), tiles, result.seconds, str(out), f"ok{resumed}"))
    echo_table(rows)
    failed = [r for r in rows if r.status.startswith("failed")]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(rows)} slides failed (see the table)")
    return rows


def _check_all(slides, outs, model, overwrite: bool, force: bool) -> list:
    """Refuse foreign outputs and mismatched slides up front; the source checks, per slide."""
    from ._source import Refused, checked_source, model_direction, refuse_foreign_output

    for out in outs:
        refuse_foreign_output(out, overwrite)
    direction = model_direction(model)
    checks = []
    for slide in slides:
        try:
            checks.append(checked_source(Path(slide), direction, force))
        except Refused:
            raise
        except Exception:  # noqa: BLE001 - an unreadable slide fails in its own row later
            checks.append(None)
    return checks


@contextlib.contextmanager
def _shared(scheduler: str | None) -> Iterator[str | None]:
    """Start a ``local:N`` cluster once for all slides; pass addresses (and None) through."""
    if not scheduler or not scheduler.startswith("local:"):
        yield scheduler
        return
    from napari_virtualstain.core.engine.distributed import get_client

    client, cluster = get_client(scheduler)
    try:
        yield cluster.scheduler_address
    finally:
        client.close()
        cluster.close()


def echo_table(rows: list[SlideRow]) -> None:
    """slide | tissue/total tiles | seconds | output | status, as aligned columns."""
    header = ("slide", "tiles", "seconds", "output", "status")
    cells = [header] + [(r.slide, r.tiles, f"{r.seconds:.1f}", r.output, r.status) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    for c in cells:
        click.echo(
            "  ".join(v.ljust(w) for v, w in zip(c[:-1], widths, strict=True)) + "  " + c[-1]
        )
