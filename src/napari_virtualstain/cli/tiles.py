"""``virtualstain tiles`` and ``virtualstain pairs``: training tiles from slides."""

from __future__ import annotations

from pathlib import Path

import click

from napari_virtualstain.cli.progress import tqdm_progress
from napari_virtualstain.core.progress import drain

from ._params import MPP, OUTPUT_FOLDER


def _write_tiles(label: str, work, quiet: bool, seen: list | None = None):
    """Drain a tile-writing generator under a progress bar; returns its result. Its errors (bad
    input, an existing index, a failed write) become click errors. ``seen`` gets the last
    progress report."""
    try:
        with tqdm_progress(label, quiet, unit="tile") as on_progress:

            def report(p) -> None:
                on_progress(p)
                if seen is not None:
                    seen[:] = [p]

            return drain(work, report)
    except (ValueError, FileExistsError, OSError) as err:
        raise click.ClickException(str(err)) from err


def _output_mpp(ctx, param, value):
    """--mpp: 0 is native resolution (None); anything else must be a valid pixel size."""
    try:
        native = float(value) == 0
    except (TypeError, ValueError):
        native = False  # MPP names the bad value
    if native:
        return None
    try:
        return MPP.convert(value, param, ctx)
    except click.BadParameter as err:
        raise click.BadParameter(f"{err.message} (or 0 for native)", ctx, param) from None


def _check_names(slides: tuple[Path, ...]) -> None:
    """Refuse, before any work, slides whose tiles would share names (they are named after the
    slide's file name): the same check as ``stain --out-dir``."""
    from napari_virtualstain.core.io.slide import display_name

    seen: dict[str, Path] = {}
    for s in slides:
        name = display_name(Path(s))
        if name in seen:
            raise click.UsageError(
                f"{seen[name]} and {s} are both named {name!r}; their tiles would overwrite "
                "each other. Rename one, or cut them into separate --out folders"
            )
        seen[name] = s


@click.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=OUTPUT_FOLDER, help="Tile folder.")
@click.option("--size", "tile_px", type=int, default=288, show_default=True, help="Tile side, px.")
@click.option("--overlap", "overlap_px", type=int, default=144, show_default=True, help="px.")
@click.option("--mpp", default="0.5", show_default=True, callback=_output_mpp,
              help="Output µm/px (0 = native).")  # fmt: skip
@click.option("--min-tissue", type=float, default=0.5, show_default=True,
              help="White cleaning: minimum tissue fraction of a kept tile.")  # fmt: skip
@click.option("--source-mpp", type=MPP, help="Level-0 µm/px of slides that do not state it.")
@click.option("--overwrite", is_flag=True,
              help="Delete a finished tile set in OUT (never other files) and cut it again.")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def tiles(
    slides: tuple[Path, ...],
    out: Path,
    tile_px: int,
    overlap_px: int,
    mpp: float | None,
    min_tissue: float,
    source_mpp: float | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Cut SLIDES into PNG tiles at --mpp, drop mostly-white tiles, and write OUT/index.csv.

    OUT must be new, empty, or a tiles folder: an interrupted run is resumed by the same command
    (its index is OUT/index.partial.csv until it finishes), a finished one is redone only with
    --overwrite, and a folder holding anything else is refused.
    """
    from napari_virtualstain.core.train.tiles import TileSpec, iter_extract_tiles

    _check_names(slides)
    try:
        spec = TileSpec(tile_px, overlap_px, mpp, min_tissue)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    seen: list = []
    try:
        work = iter_extract_tiles(slides, out, spec, source_mpp, overwrite)
        kept = _write_tiles("tiles", work, quiet, seen)
    except click.ClickException as err:
        if getattr(err.__cause__, "overwrite_asked", False):
            err.exit_code = 2  # --overwrite asked to replace files of the user's (as `stain`)
        raise
    except KeyboardInterrupt:
        so_far = f" ({seen[0].details['kept']} tiles so far)" if seen else ""
        raise click.ClickException(
            f"interrupted; {out} is partial{so_far}. Rerun the same command to resume"
        ) from None
    resumed = seen[0].details.get("resumed", 0) if seen else 0
    note = f", {resumed} of them from the interrupted run" if resumed else ""
    click.echo(f"{len(kept)} tiles kept in {out}{note} (index: {out / 'index.csv'})")


@click.command()
@click.argument("he_slide", type=click.Path(exists=True, path_type=Path))
@click.argument("ihc_slide", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="BCI root.")
@click.option("--ssim-min", type=float, default=0.4, show_default=True)
@click.option("--size", "tile_px", type=int, default=256, show_default=True)
@click.option("--overlap", "overlap_px", type=int, default=0, show_default=True)
@click.option("--mpp", type=MPP, default=0.5, show_default=True, help="Output µm/px.")
@click.option("--min-tissue", type=float, default=0.5, show_default=True)
@click.option("--test-fraction", type=float, default=0.1, show_default=True)
@click.option("--register/--no-register", default=True, show_default=True,
              help="Register IHC onto H&E first (needs both pixel sizes); else take as given.")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def pairs(
    he_slide: Path,
    ihc_slide: Path,
    out: Path,
    ssim_min: float,
    tile_px: int,
    overlap_px: int,
    mpp: float,
    min_tissue: float,
    test_fraction: float,
    register: bool,
    quiet: bool,
) -> None:
    """Cut H&E / IHC tile pairs of adjacent sections, keep those with SSIM > --ssim-min, and
    write them as a BCI layout (OUT/HE/{train,test}, OUT/IHC/{train,test}, OUT/pairs.csv)."""
    from napari_virtualstain.core.io import open_slide
    from napari_virtualstain.core.train.pairs import PairSpec, iter_make_pairs, register_for_pairs
    from napari_virtualstain.core.train.tiles import TileSpec

    try:
        spec = PairSpec(TileSpec(tile_px, overlap_px, mpp, min_tissue), ssim_min, test_fraction)
        he, ihc = open_slide(he_slide), open_slide(ihc_slide)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    registration = None
    if register:
        registration = register_for_pairs(he, ihc)
        if registration is None:
            click.echo("a slide has no pixel size: pairs are taken as given (not registered)")
    kept = _write_tiles("pairs", iter_make_pairs(he, ihc, out, spec, registration), quiet)
    click.echo(f"{kept} pairs with SSIM > {ssim_min} written to {out}")
