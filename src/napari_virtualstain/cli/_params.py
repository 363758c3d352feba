"""Click parameter types shared by the sub-commands: validated at the door, before any work."""

from __future__ import annotations

import math
import os
from pathlib import Path

import click


class UsageFailure(click.ClickException):
    """A usage error that shows only once the input is open (the slide has no pixel size, no such
    level): exit 2 like click's, in one line, without the usage text."""

    exit_code = 2


class MppType(click.ParamType):
    """Microns per pixel: a finite number > 0 (0, negatives, nan and inf are usage errors)."""

    name = "µm/px"

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value) and value > 0:
            return value
        try:
            mpp = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number (µm per pixel, e.g. 0.25)", param, ctx)
        if not math.isfinite(mpp) or mpp <= 0:
            self.fail(f"{value!r}: the pixel size must be a finite number > 0 µm/px", param, ctx)
        if mpp > 1000:
            self.fail(
                f"{value!r} µm/px is not a microscope pixel size (expected ~0.1-10)", param, ctx
            )
        return mpp


class DeviceType(click.ParamType):
    """auto, cpu, cuda, cuda:N or mps, checked against this machine's torch (imported lazily)."""

    name = "device"

    def convert(self, value, param, ctx):
        value = str(value).strip()
        if value == "auto":
            return value
        try:
            import torch
        except ImportError:
            self.fail("torch is not installed; install napari-virtualstain[torch]", param, ctx)
        try:
            device = torch.device(value)
        except (RuntimeError, ValueError):
            self.fail(f"{value!r} is not a device (auto, cpu, cuda, cuda:N, mps)", param, ctx)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                self.fail(f"{value!r}: this torch has no CUDA (use cpu or auto)", param, ctx)
            count = torch.cuda.device_count()
            if device.index is not None and device.index >= count:
                self.fail(f"{value!r}: this machine has {count} CUDA device(s)", param, ctx)
        elif device.type == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                self.fail(f"{value!r}: MPS is not available here", param, ctx)
        elif device.type != "cpu":
            self.fail(
                f"{value!r}: unsupported device type (auto, cpu, cuda, cuda:N, mps)", param, ctx
            )
        return value


class OutputFile(click.ParamType):
    """A file the command will write: refused before any work if it cannot be written.

    A folder, a read-only file or an unwritable (or missing and uncreatable) parent folder is a
    usage error. The file itself is written later, atomically.
    """

    name = "file"

    def convert(self, value, param, ctx):
        path = Path(value).expanduser()
        if path.is_dir():
            self.fail(f"{path} is a folder; give a file name", param, ctx)
        if path.exists() and not os.access(path, os.W_OK):
            self.fail(f"{path} is not writable", param, ctx)
        parent = path.parent if str(path.parent) else Path(".")
        existing = parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            self.fail(f"{path}: {existing} is a file, not a folder", param, ctx)
        if not os.access(existing, os.W_OK | os.X_OK):
            self.fail(f"{path}: folder {existing} is not writable", param, ctx)
        return path


class OutputFolder(click.ParamType):
    """A folder the command will create or write into (checked, not created, at parse time)."""

    name = "folder"

    def convert(self, value, param, ctx):
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            self.fail(
                f"{path} exists and is a file, not a folder; refusing to overwrite it", param, ctx
            )
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            self.fail(f"{path}: folder {existing} is not writable", param, ctx)
        return path


class SchedulerType(click.ParamType):
    """``local:N`` (N >= 1 local worker processes) or a dask scheduler's ``[tcp://]host:port``."""

    name = "address"
    SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if text.startswith("local:"):
            n = text.removeprefix("local:")
            if not n.isdigit() or int(n) < 1:
                self.fail(f"{value!r}: local:N needs a whole number N >= 1", param, ctx)
            return text
        scheme, _, rest = text.rpartition("://")
        if scheme and scheme not in self.SCHEMES:
            self.fail(
                f"{value!r}: unknown protocol {scheme!r} ({', '.join(self.SCHEMES)})", param, ctx
            )
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(
                f"{value!r} is not a scheduler address: give local:N or host:port "
                "(e.g. tcp://10.0.0.5:8786)",
                param,
                ctx,
            )
        return text


def check_thresholds(ctx, param, value: tuple[float, ...]) -> tuple[float, ...]:
    """``--threshold``: one or three finite DAB OD values > 0, increasing (``Ki67Config``'s rule)."""
    if not value:
        return value
    from napari_virtualstain.core.ki67.measure import Ki67Config

    for v in value:
        if not math.isfinite(v):
            raise click.BadParameter(f"{v} is not a DAB optical density", ctx, param)
    try:
        Ki67Config(thresholds=tuple(value))
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None
    return value


MPP = MppType()
SCHEDULER = SchedulerType()
DEVICE = DeviceType()
OUTPUT_FILE = OutputFile()
OUTPUT_FOLDER = OutputFolder()


def segmenter_options(command):
    """``--segmenter`` (the registry's names, the Ki-67 default) and ``--model-dir``."""
    from napari_virtualstain.core.segmentation import BACKENDS, DEFAULT_SEGMENTER

    command = click.option(
        "--model-dir",
        type=click.Path(path_type=Path),
        help="Local model folder / file (StarDist, Cellpose, learned); default: the usual one.",
    )(command)
    return click.option(
        "--segmenter", type=click.Choice(list(BACKENDS)), default=DEFAULT_SEGMENTER,
        show_default=True,
    )(command)  # fmt: skip


def build_segmenter(name: str, model_dir: Path | None):
    """The segmenter called ``name``; weight-based ones take ``model_dir`` as their ``model``."""
    from napari_virtualstain.core.segmentation import get_segmenter

    options = {"model": str(model_dir)} if model_dir and name != "builtin" else {}
    try:
        return get_segmenter(name, **options)
    except ImportError as err:
        raise click.ClickException(str(err)) from err
