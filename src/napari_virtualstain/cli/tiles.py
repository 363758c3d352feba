"""``virtualstain tiles`` and ``virtualstain pairs``: training tiles from slides."""

from __future__ import annotations

from pathlib import Path

import click

from napari_virtualstain.cli.progress import tqdm_progress
from napari_virtualstain.core.progress import drain

from ._params import MPP


def _write_tiles(label: str, work, quiet: bool):
    """Drain a tile-writing generator under a progress bar; returns its result. Its errors (bad
    input, an existing index, a failed write) become click errors."""
    try:
        with tqdm_progress(label, quiet, unit="tile") as on_progress:
            return drain(work, on_progress)
    except (ValueError, FileExistsError, OSError) as err:
        raise click.ClickException(str(err)) from err


@click.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Tile folder.")
@click.option("--size", "tile_px", type=int, default=288, show_default=True, help="Tile side, px.")
@click.option("--overlap", "overlap_px", type=int, default=144, show_default=True, help="px.")
@click.option(
    "--mpp", type=float, default=0.5, show_default=True, help="Output µm/px (0 = native)."
)
@click.option("--min-tissue", type=float, default=0.5, show_default=True,
              help="White cleaning: minimum tissue fraction of a kept tile.")  # fmt: skip
@click.option("--source-mpp", type=MPP, help="Level-0 µm/px of slides that do not state it.")
@click.option("--overwrite", is_flag=True, help="Write into a folder that has an index.csv.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def tiles(
    slides: tuple[Path, ...],
    out: Path,
    tile_px: int,
    overlap_px: int,
    mpp: float,
    min_tissue: float,
    source_mpp: float | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Cut SLIDES into PNG tiles at --mpp, drop mostly-white tiles, and write OUT/index.csv."""
    from napari_virtualstain.core.train.tiles import TileSpec, iter_extract_tiles

    try:
        spec = TileSpec(tile_px, overlap_px, mpp if mpp > 0 else None, min_tissue)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    kept = _write_tiles(
        "tiles", iter_extract_tiles(slides, out, spec, source_mpp, overwrite), quiet
    )
    click.echo(f"{len(kept)} tiles kept in {out} (index: {out / 'index.csv'})")


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
