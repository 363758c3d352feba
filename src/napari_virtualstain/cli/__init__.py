"""The ``virtualstain`` command.

Sub-commands live in their own modules and are imported only when invoked, so ``--help`` stays
fast and torch / TensorFlow are never imported for ``info``.

Errors end in one line naming the file and the problem, never a traceback (``--debug`` or
``NAPARI_VIRTUALSTAIN_DEBUG=1`` shows it, for every command). Exit codes: 0 success, 1 a failed
run (bad or unreadable input, a refused output, a full disk, an interruption), 2 a usage error
(a bad option value, a missing argument); 130 when Ctrl-C lands after the work, while Python
shuts down (nothing is left to lose then, so nothing is printed).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import logging
import os
import signal
import sys
import traceback
import warnings

import click

EXIT_FAILED = 1
EXIT_USAGE = 2

# Library notices that only repeat what the command says in its own line; --debug shows them.
# torch.load on a TorchScript file (the checkpoint loader names the file and what to do):
_QUIET_WARNINGS = (r".*looks like a TorchScript archive",)
# tifffile on a file with no first page (the slide is then refused: "holds no image series"):
_QUIET_TIFFFILE = ("invalid offset to first page",)

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
            with _known_noise_quiet(_debug(ctx)):
                return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.UsageError):
            raise
        except click.ClickException as err:
            # A command's own one-line error: with --debug, the traceback of what caused it.
            show_traceback(err, ctx)
            raise
        except (Exception, KeyboardInterrupt) as err:
            if _debug(ctx):
                raise
            raise click.ClickException(describe_error(err)) from err

    def __call__(self, *args, **kwargs):
        # The console script comes through here (CliRunner calls main() and is left alone).
        try:
            return super().__call__(*args, **kwargs)
        finally:
            _quiet_interrupts_at_exit()


class _DropQuietRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _QUIET_TIFFFILE)


@contextlib.contextmanager
def _known_noise_quiet(debug: bool):
    """Silence the known-harmless library notices above while a command runs (not others)."""
    if debug:
        yield
        return
    log, drop = logging.getLogger("tifffile"), _DropQuietRecords()
    with warnings.catch_warnings():
        for message in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        log.addFilter(drop)
        try:
            yield
        finally:
            log.removeFilter(drop)


def _debug(ctx: click.Context | None) -> bool:
    flag = os.environ.get("NAPARI_VIRTUALSTAIN_DEBUG", "").lower() in ("1", "true", "yes")
    root = ctx.find_root() if ctx is not None else None
    return flag or bool(root is not None and root.params.get("debug"))


def show_traceback(err: BaseException, ctx: click.Context | None = None) -> None:
    """With ``--debug``, print the traceback of ``err`` and what caused it (to stderr)."""
    if not _debug(ctx or click.get_current_context(silent=True)):
        return
    err.__suppress_context__ = False  # `raise ... from None` hides the cause from users only
    click.echo("".join(traceback.format_exception(err)).rstrip(), err=True)


def _quiet_interrupts_at_exit() -> None:
    """Ctrl-C from here on (atexit handlers, joining threads) exits 130 without a traceback.

    The command has finished and its outputs are written; a KeyboardInterrupt now would only
    print a traceback of the interpreter's shutdown.
    """

    def leave(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or broken stream: nothing to save
                pass
        os._exit(128 + signal.SIGINT)

    try:
        signal.signal(signal.SIGINT, leave)
    except ValueError:  # not the main thread: Python would not deliver SIGINT here anyway
        pass


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
