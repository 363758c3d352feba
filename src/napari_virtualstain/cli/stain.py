"""``virtualstain stain SLIDE --model NAME --out OUT.zarr``: a whole slide to OME-Zarr."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from ..core.models.device import PRECISION_CHOICES
from ._params import DEVICE, MPP, OUTPUT_FOLDER, SCHEDULER, UsageFailure
from ._source import checked_source, model_direction, refuse_foreign_output


@click.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--model", "-m", required=True, help="Registry name or checkpoint path.")
@click.option("--out", "-o", type=OUTPUT_FOLDER, help="OUT.zarr (one slide)")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for several slides: DIR/NAME.zarr each, one cluster, a summary table.",
)
@click.option("--mpp", type=MPP, help="Level-0 µm/px; required when the slide does not state it.")
@click.option(
    "--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps."
)
@click.option(
    "--precision",
    type=click.Choice(PRECISION_CHOICES),
    default="auto",
    show_default=True,
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Tiles per forward pass [default: 1 on CPU, 4 on GPU].",
)
@click.option("--tile-px", type=int, help="Tile side at the model's mpp (default: model card).")
@click.option("--halo-px", type=int, help="Context per side (default: from the receptive field).")
@click.option("--blend", type=click.Choice(["auto", "crop", "blend"]), default="auto")
@click.option("--norm", type=click.Choice(["slide", "tile"]), default="slide", show_default=True)
@click.option("--no-tissue-mask", is_flag=True, help="Stain background tiles too.")
@click.option(
    "--preview-level",
    type=click.IntRange(min=0),
    help="Run on this coarser level (labelled preview).",
)
@click.option("--cache", "cache_dir", type=OUTPUT_FOLDER, help="Tile cache folder (kept).")
@click.option("--keep-cache", is_flag=True, help="Keep the OUT.tiles-* scratch after success.")
@click.option(
    "--scheduler",
    type=SCHEDULER,
    help="dask.distributed address (host:port), or local:N for N local processes.",
)
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the generator.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an OUT.zarr that virtualstain wrote (its marker file inside); anything else "
    "at OUT is refused (exit 2) and never deleted.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Stain even if SLIDE does not look like the model's input stain (H&E for he->ki67, "
    "H-DAB for ki67->he); noted in the output's provenance.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def stain(
    slides: tuple[Path, ...],
    model: str,
    out: Path | None,
    out_dir: Path | None,
    mpp: float | None,
    device: str,
    precision: str,
    batch_size: int | None,
    tile_px: int | None,
    halo_px: int | None,
    blend: str,
    norm: str,
    no_tissue_mask: bool,
    preview_level: int | None,
    cache_dir: Path | None,
    keep_cache: bool,
    scheduler: str | None,
    use_compile: bool,
    overwrite: bool,
    force: bool,
    quiet: bool,
) -> None:
    """Stain every tissue tile of SLIDE and write an OME-Zarr pyramid with provenance.

    Several slides (SLIDE... --out-dir DIR) run on one cluster, one DIR/NAME.zarr each, with
    per-slide resume and a summary table (cli/stain_many.py).

    An interrupted run resumes from the tiles already computed (kept in a scratch folder
    OUT.tiles-* beside OUT, removed after success). Only one run writes an OUT at a time.

    Before any work, SLIDE is checked against the model's input stain (an H&E -> Ki-67 model
    refuses a slide that looks like Ki-67 IHC, and the reverse); --force stains it anyway.
    """
    from napari_virtualstain.core.engine.distributed import stain_slide
    from napari_virtualstain.core.engine.stain import MppUnknownError, StainConfig
    from napari_virtualstain.core.engine.tissue import TissueConfig

    try:
        config = StainConfig(
            device=device, precision=precision, batch_size=batch_size, tile_px=tile_px,
            halo_px=halo_px, blend=blend, norm=norm, compile=use_compile,
            tissue=None if no_tissue_mask else TissueConfig(), preview_level=preview_level,
        )  # fmt: skip
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    from .progress import tqdm_progress

    if preview_level is not None:
        _check_preview_level(slides, preview_level)
    if out_dir is not None or len(slides) > 1:
        from .stain_many import stain_many

        stain_many(slides, out_dir, model, config, mpp=mpp, cache_dir=cache_dir,
                   keep_cache=keep_cache, scheduler=scheduler, overwrite=overwrite,
                   force=force, quiet=quiet)  # fmt: skip
        return
    if out is None:
        raise click.UsageError("give --out OUT.zarr (or --out-dir DIR for several slides)")
    slide = slides[0]
    refuse_foreign_output(out, overwrite)
    check = checked_source(slide, model_direction(model), force)
    bar = contextlib.ExitStack()
    shown = []

    def on_progress(p) -> None:  # the bar appears with the first chunk, not before an error
        if not shown:
            shown.append(bar.enter_context(tqdm_progress("staining", quiet, unit="chunk")))
        shown[0](p)

    try:
        with bar:
            result = stain_slide(
                slide, model, out, config=config, mpp=mpp, cache_dir=cache_dir,
                keep_cache=keep_cache, scheduler=scheduler, overwrite=overwrite,
                progress=on_progress, source_check=check,
                on_event=lambda msg: click.echo(f"warning: {msg}", err=True),
            )  # fmt: skip
    except MppUnknownError as err:
        raise UsageFailure(str(err)) from err
    except KeyboardInterrupt as err:
        raise click.ClickException(_interrupted(out)) from err
    click.echo(result.summary())


def _check_preview_level(slides, level: int) -> None:
    """Refuse a --preview-level that a slide does not have, before any model is loaded."""
    from napari_virtualstain.core.io import SlideReadError, open_slide

    for path in slides:
        try:
            n = len(open_slide(path).levels)
        except (SlideReadError, OSError):
            continue  # the run itself reports an unreadable slide, in its own words
        if level >= n:
            raise UsageFailure(
                f"--preview-level {level}: {path} has {n} level(s), 0 to {n - 1} (0 = full "
                "resolution)"
            )


def _interrupted(out: Path) -> str:
    """What an interruption left: an output to resume, or (interrupted early) nothing at all.

    The engine keeps an output only when it names a scratch holding tiles; otherwise it removes
    the fresh output with its scratch.
    """
    if out.is_dir() and any(out.iterdir()):
        return (
            f"interrupted; {out} is partial. Rerun the same command to resume from the tiles "
            "already computed"
        )
    return f"interrupted before any tile was written; nothing to resume at {out}"
