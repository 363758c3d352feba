"""``virtualstain models``: list the model registry; ``models download``: fetch a carded model."""

from __future__ import annotations

import json
from pathlib import Path

import click


def _row(entry) -> dict:
    card = entry.card
    return {
        "name": entry.name,
        "source": entry.source,
        "path": str(entry.path),
        "arch": card.arch if card else None,
        "direction": card.direction if card else None,
        "mpp": card.mpp if card else None,
        "tile_px": card.tile_px if card else None,
        "error": entry.error,
    }


def _format(row: dict) -> str:
    if row["error"]:
        return f"{row['name']:<24} {row['source']:<8} unreadable card: {row['error']}"
    if row["arch"] is None:
        detail = "bare weights (architecture inferred on load)"
    else:
        mpp = f"{row['mpp']} µm/px" if row["mpp"] else "mpp unknown"
        detail = f"{row['arch']:<16} {row['direction']:<10} {mpp}, {row['tile_px']} px tiles"
    return f"{row['name']:<24} {row['source']:<8} {detail}\n{'':<33}{row['path']}"


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Also list this model folder or weights file (repeatable).",
)
@click.pass_context
def models(ctx: click.Context, as_json: bool, paths: tuple[Path, ...]) -> None:
    """List the models in the user folder, the package and PATHs.

    The user folder is ~/.napari-virtualstain/models, or $NAPARI_VIRTUALSTAIN_MODELS.
    """
    if ctx.invoked_subcommand is not None:
        return
    from napari_virtualstain.core.models.registry import (
        ModelNotFoundError,
        list_models,
        package_models_dir,
        user_models_dir,
    )

    try:
        rows = [_row(e) for e in list_models(paths)]
    except ModelNotFoundError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"user models:    {user_models_dir()}")
    click.echo(f"package models: {package_models_dir()}")
    if not rows:
        click.echo("no models found")
    for row in rows:
        click.echo(_format(row))


@models.command()
@click.argument("card_json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, help="Seconds.")
def download(card_json: Path, timeout_s: float) -> None:
    """Download the weights named by CARD_JSON (url + sha256) into the user models folder."""
    from napari_virtualstain.core.models.card import ModelCard, ModelCardError
    from napari_virtualstain.core.models.registry import ModelDownloadError, download_model

    try:
        card = ModelCard.from_json(card_json)
    except ModelCardError as err:
        msg = str(err) if str(card_json) in str(err) else f"{card_json}: {err}"
        raise click.ClickException(msg) from None
    try:
        folder = download_model(card, timeout_s=timeout_s)
    except (ModelDownloadError, FileExistsError) as err:
        raise click.ClickException(f"{card_json}: {err}") from None
    click.echo(f"installed {folder}")
