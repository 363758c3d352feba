"""``virtualstain demo``: the main job on the bundled sample slides.

With a display it opens napari with the samples and the plugin's dock widgets; headless it writes
its outputs to a folder and prints where they are.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@click.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("demo_output"),
    show_default=True,
    help="Folder for the headless outputs.",
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "gui", "headless"]),
    default="auto",
    show_default=True,
    help="auto: open napari when a display is available, otherwise write outputs headless.",
)
def demo(out: Path, mode: str) -> None:
    """Run the demo on the bundled sample slides."""
    gui = mode == "gui" or (mode == "auto" and has_display())
    if gui:
        from napari_virtualstain.demo_gui import run_gui_demo

        run_gui_demo()
        return
    from napari_virtualstain.demo import run_headless_demo

    outputs = run_headless_demo(out, log=click.echo)
    click.echo(f"\nDemo outputs written to {out.resolve()}:")
    for item in outputs:
        click.echo(f"  {item}")
