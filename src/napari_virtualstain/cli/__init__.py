"""The ``virtualstain`` command.

Sub-commands live in their own modules and are imported only when invoked, so ``--help`` stays
fast and torch / TensorFlow are never imported for ``info``.

Errors end in one line naming the file and the problem, never a traceback (``--debug`` or
``NAPARI_VIRTUALSTAIN_DEBUG=1`` shows it). Exit codes: 0 success, 1 a failed run (bad or
unreadable input, a refused output, a full disk, an interruption), 2 a usage error (a bad
option value, a missing argument).
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os

import click

EXIT_FAILED = 1
EXIT_USAGE = 2

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
    "segment": "napari_virtualstain.cli.segment:segment",
    "register": "napari_virtualstain.cli.register:register",
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

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (Exception, KeyboardInterrupt) as err:
            if _debug(ctx):
                raise
            raise click.ClickException(describe_error(err)) from err


def _debug(ctx: click.Context) -> bool:
    flag = os.environ.get("NAPARI_VIRTUALSTAIN_DEBUG", "").lower() in ("1", "true", "yes")
    return flag or bool(ctx.params.get("debug"))


def describe_error(err: BaseException) -> str:
    """One line for the user: the file and the problem (the traceback is for ``--debug``)."""
    from napari_virtualstain.core.progress import Cancelled

    if isinstance(err, KeyboardInterrupt):
        return "interrupted; rerun the same command to resume where a command supports it"
    if isinstance(err, Cancelled):
        return f"cancelled: {err}" if str(err) else "cancelled"
    if isinstance(err, OSError):
        return _describe_os_error(err)
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    known = ("SlideReadError", "SlideWriteError", "CheckpointError", "ModelCardError",
             "ModelNotFoundError", "ArchitectureError")  # fmt: skip
    if type(err).__name__ in known or isinstance(err, ValueError | LookupError):
        return text or type(err).__name__
    return (
        f"unexpected {type(err).__name__}: {text} (please report it; --debug shows the traceback)"
    )


def _describe_os_error(err: OSError) -> str:
    if err.strerror is None:
        return str(err)  # our own OSErrors carry a whole message that names the file
    what = err.strerror
    if err.errno == errno.ENOSPC:
        what = "no space left on the device; any previous file there was left intact"
    names = [str(n) for n in (err.filename, err.filename2) if n]
    return f"{' -> '.join(names)}: {what}" if names else what


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="napari-virtualstain")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error.")
def main(debug: bool) -> None:
    """Virtual staining (H&E <-> Ki-67), Ki-67 ratio and QA for whole-slide images.

    Exit codes: 0 success, 1 a failed run, 2 a usage error.
    """
