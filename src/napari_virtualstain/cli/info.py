"""``virtualstain info``: levels, shapes, mpp and chunking of slides."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(slides: tuple[Path, ...], as_json: bool) -> None:
    """Print the pyramid levels, shapes, mpp, magnification and chunking of each SLIDE."""
    from napari_virtualstain.core.io import SlideReadError, open_slide
    from napari_virtualstain.core.io.formatting import format_summary

    from . import show_traceback

    failures = 0
    results = []
    for path in slides:
        start = time.perf_counter()
        try:
            slide = open_slide(path)
        except (SlideReadError, OSError) as exc:  # one bad file does not stop the others
            show_traceback(exc)
            what = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            click.echo(f"Error: {what}", err=True)  # click's word, as the other commands
            failures += 1
            continue
        summary = slide.summary()
        summary["open_seconds"] = round(time.perf_counter() - start, 4)
        results.append(summary)
        if not as_json:
            click.echo(format_summary(summary))
            click.echo(f"opened in {summary['open_seconds'] * 1000:.1f} ms\n")
    if as_json:
        click.echo(json.dumps(results, indent=2))
    if failures:
        raise SystemExit(1)
