"""What ``stain`` checks before any work: the output is the tool's to replace, and the slide
looks like the model's input stain. Both refusals exit 2 with one line and touch nothing."""

from __future__ import annotations

import json
from pathlib import Path

import click


class Refused(click.ClickException):
    """A one-line refusal of what was asked (exit 2, like a usage error, without the usage)."""

    exit_code = 2


def refuse_foreign_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder at ``out`` that this tool did not write (no marker inside).

    ``--overwrite`` replaces only outputs of this tool: asked to replace anything else, the run
    is refused (exit 2) and nothing is deleted; without it, exit 1 with a hint in CLI words.
    The engine refuses the same folders (``ownership.check_replaceable``), but only after the
    model and slide are opened; asking here refuses every output of a batch before any work.
    """
    from napari_virtualstain.core.io.ownership import MARKER_NAME, is_foreign

    out = Path(out)
    if not is_foreign(out):
        return
    what = f"{out} was not written by virtualstain (no {MARKER_NAME} marker inside)"
    if overwrite:
        raise Refused(
            f"{what}; --overwrite replaces only outputs of this tool, so nothing was deleted. "
            "Choose another --out"
        )
    raise click.ClickException(
        f"{what}; refusing to touch it (not even with --overwrite). Choose another --out"
    )


def model_direction(model: str) -> str | None:
    """The ``source->target`` of a model's card, or None when it has no card."""
    from napari_virtualstain.core.models.card import ModelCard
    from napari_virtualstain.core.models.checkpoints import CARD_NAME, resolve_weights

    weights = resolve_weights(model)  # an unknown name fails here, listing the known ones
    for card in (weights.with_suffix(".json"), weights.parent / CARD_NAME):
        if card.is_file():
            return ModelCard.from_json(card).direction
    return None


def check_slide_source(slide_path: Path, direction: str | None):
    """The source-stain verdict on one slide, or None when it cannot be checked here.

    Greyscale slides are left to the engine's own refusal ("no colour"); a model without a
    card has no stated direction.
    """
    from napari_virtualstain.core.engine.source_stain import check_source_stain, source_overview
    from napari_virtualstain.core.io import open_slide
    from napari_virtualstain.core.io.pixels import is_colourless

    if direction is None:
        return None
    slide = open_slide(slide_path)
    if "greyscale" in slide.notes or is_colourless(slide):
        return None
    return check_source_stain(source_overview(slide), direction)


def refuse_mismatch(slide_path: Path, check, force: bool):
    """Raise ``Refused`` for a slide that does not look like the model's input, unless forced.

    Returns the check to record (marked ``forced`` when it was overridden), or None.
    """
    from dataclasses import replace

    if check is None or check.ok:
        return check
    if not force:
        raise Refused(
            f"{slide_path}: {check.reason}. Stain anyway with --force (noted in the output's "
            "provenance)"
        )
    click.echo(f"warning: {slide_path}: {check.reason}; staining anyway (--force)", err=True)
    return replace(check, forced=True)


def record_source_check(out: Path, check) -> None:
    """Add the source-stain verdict to the provenance of a finished ``out`` (atomically)."""
    from napari_virtualstain.core.io import PROVENANCE_KEY
    from napari_virtualstain.core.io.atomic import write_json_atomic

    attrs_path = Path(out) / ".zattrs"  # write_ome_zarr writes zarr v2
    if check is None or not attrs_path.is_file():
        return
    attrs = json.loads(attrs_path.read_text(encoding="utf-8"))
    prov = dict(attrs.get(PROVENANCE_KEY) or {})
    prov["source_stain_check"] = check.to_dict()
    if check.forced:
        prov["source_stain_note"] = f"stained with --force although {check.reason}"
    attrs[PROVENANCE_KEY] = prov
    write_json_atomic(attrs_path, attrs)
