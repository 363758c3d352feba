"""``virtualstain register``: align two adjacent sections, save the transform, map annotations.

    virtualstain register MOVING FIXED --out T.json [--mpp 0.25] [--fixed-mpp 0.25]
        [--rigid] [--geojson IN.geojson --geojson-out OUT.geojson [--geojson-on moving|fixed]]
        [--quiet]

The transform (an affine in µm plus an optional smooth displacement field) is the JSON of
``core.registration.Registration``. ``--geojson`` maps QuPath GeoJSON (level-0 pixels) drawn
on MOVING onto FIXED (or, with ``--geojson-on fixed``, the other way).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._params import MPP, OUTPUT_FILE, UsageFailure
from .progress import tqdm_progress


@click.command()
@click.argument("moving", type=click.Path(path_type=Path))
@click.argument("fixed", type=click.Path(path_type=Path))
@click.option("--out", type=OUTPUT_FILE, required=True, help="The transform (JSON).")
@click.option("--mpp", type=MPP, help="MOVING's pixel size (µm/px); overrides the file's.")
@click.option("--fixed-mpp", type=MPP, help="FIXED's pixel size (µm/px); overrides the file's.")
@click.option("--rigid", is_flag=True, help="Affine only (no displacement field).")
@click.option(
    "--geojson", "geojson_in", type=click.Path(path_type=Path), help="Annotations to map."
)
@click.option("--geojson-out", type=OUTPUT_FILE, help="The mapped annotations.")
@click.option(
    "--geojson-on",
    type=click.Choice(["moving", "fixed"]),
    default="moving",
    show_default=True,
    help="Which slide --geojson was drawn on; it is mapped onto the other.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def register(
    moving, fixed, out, mpp, fixed_mpp, rigid, geojson_in, geojson_out, geojson_on, quiet
) -> None:
    """Register MOVING onto FIXED and write the transform to --out."""
    from napari_virtualstain.core.io import open_slide
    from napari_virtualstain.core.progress import drain
    from napari_virtualstain.core.registration import RegistrationConfig, iter_register_slides

    if (geojson_in is None) != (geojson_out is None):
        raise click.UsageError("--geojson and --geojson-out go together")
    inputs = {Path(p).resolve() for p in (moving, fixed, geojson_in) if p is not None}
    for target in (out, geojson_out):
        if target is not None and Path(target).resolve() in inputs:
            raise click.ClickException(f"refusing to overwrite the input {target}")
    geojson = _read_json(geojson_in) if geojson_in else None
    slides = {}
    for name, path, override in (("moving", moving, mpp), ("fixed", fixed, fixed_mpp)):
        slide = open_slide(path)
        if override is not None:
            slide = slide.with_mpp(override)
        if slide.mpp is None:
            flag = "--mpp" if name == "moving" else "--fixed-mpp"
            raise UsageFailure(f"{path}: the pixel size is unknown; pass {flag} (µm/px)")
        slides[name] = slide
    config = RegistrationConfig(nonrigid=not rigid)
    with tqdm_progress("register", quiet, unit="%") as on_progress:
        reg = drain(iter_register_slides(slides["fixed"], slides["moving"], config), on_progress)
    from napari_virtualstain.core.io.atomic import write_json_atomic

    write_json_atomic(out, reg.to_dict())
    click.echo(f"{moving} -> {fixed}: score {reg.score:.3f}; transform written to {out}")
    if reg.notes:
        click.echo(f"note: {reg.notes}", err=True)
    if geojson is not None:
        direction = "moving_to_fixed" if geojson_on == "moving" else "fixed_to_moving"
        write_json_atomic(geojson_out, reg.map_geojson(geojson, direction))
        click.echo(f"{geojson_in} mapped {direction.replace('_', ' ')} -> {geojson_out}")


def _read_json(path: Path):
    from napari_virtualstain.core.geojson import read_geojson

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise click.ClickException(f"cannot read GeoJSON from {path}: {err}") from err
    try:
        read_geojson(data, 1.0)  # validates the structure and coordinates, naming the problem
    except ValueError as err:
        raise click.ClickException(f"{path}: {err}") from err
    return data
