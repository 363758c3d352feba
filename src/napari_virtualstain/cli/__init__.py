"""The ``virtualstain`` command.

Sub-commands live in their own modules and are imported only when invoked, so ``--help`` stays
fast and torch / TensorFlow are never imported for ``info``.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

# name -> "module:attribute"; a command whose module is not part of this install is not listed.
COMMANDS: dict[str, str] = {
    "info": "napari_virtualstain.cli.info:info",
    "demo": "napari_virtualstain.cli.demo:demo",
    "models": "napari_virtualstain.cli.models:models",
    "stain": "napari_virtualstain.cli.stain:stain",
    "ratio": "napari_virtualstain.cli.ratio:ratio",
    "eval": "napari_virtualstain.cli.evaluate:eval_group",
    "tiles": "napari_virtualstain.cli.tiles:tiles",
    "pairs": "napari_virtualstain.cli.tiles:pairs",
    "train": "napari_virtualstain.cli.train:train",
}


def _available(target: str) -> bool:
    module = target.split(":")[0]
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, target in COMMANDS.items() if _available(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _available(target):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="napari-virtualstain")
def main() -> None:
    """Virtual staining (H&E <-> Ki-67), Ki-67 ratio and QA for whole-slide images."""
