"""What ``stain`` checks before any work: the output is the tool's to replace, and the slide
looks like the model's input stain. Both refusals exit 2 with one line and touch nothing."""

from __future__ import annotations

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


def checked_source(slide_path: Path, direction: str | None, force: bool):
    """The source-stain verdict on one slide (``core.engine.source_stain``), or None when
    there is nothing to check; a mismatch is ``Refused`` (exit 2) unless ``force``."""
    from napari_virtualstain.core.engine.source_stain import (
        SourceStainError,
        verify_source_stain,
    )
    from napari_virtualstain.core.io import open_slide

    if direction is None:
        return None
    try:
        check = verify_source_stain(open_slide(slide_path), direction, force)
    except SourceStainError as err:
        raise Refused(
            f"{slide_path}: {err}. Stain anyway with --force (noted in the output's provenance)"
        ) from None
    if check is not None and check.forced:
        click.echo(f"warning: {slide_path}: {check.reason}; staining anyway (--force)", err=True)
    return check
