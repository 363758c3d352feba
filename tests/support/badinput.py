"""Helpers for the bad-input catalogue (tests/badinput): run the CLI, compare checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from .ki67_synthetic import grid_of_nuclei


def checksums(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (folders listed as "<dir>")."""
    folder = Path(folder)
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        found[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def invoke(*args):
    """Run ``virtualstain ARGS`` in-process; returns click's Result (stdout + stderr)."""
    from click.testing import CliRunner

    from napari_virtualstain.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def assert_refused(res, code: int, *names) -> None:
    """Exit ``code``, one clear message naming each of ``names``, no traceback."""
    out = res.output
    assert res.exit_code == code, (res.exit_code, out, res.exception)
    assert "Traceback" not in out, out
    assert "please report it" not in out, out  # the catch-all: an error we did not foresee
    for name in names:
        assert str(name) in out, (name, out)


def write_ki67_tiff(path: Path, mpp: float = 0.5) -> Path:
    """A small H-DAB tile with known nuclei (the ratio command measures it)."""
    rgb = grid_of_nuclei(6, 6, mpp=mpp).rgb
    meta = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp}
    tifffile.imwrite(path, rgb, ome=True, tile=(64, 64), photometric="rgb", metadata=meta)
    return path


def small_tissue_rgb(h: int = 256, w: int = 320) -> np.ndarray:
    from tests.conftest import tissue_like_rgb

    return tissue_like_rgb(h, w)


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs at ``mountpoint`` (root only), unmounted afterwards."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill_disk(folder: Path) -> None:
    """Fill the filesystem of ``folder`` until ENOSPC."""
    fd = os.open(folder / "filler.bin", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def can_mount() -> str | None:
    """None when tmpfs can be mounted here, else the reason to skip."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "mounting a small tmpfs needs root (the full-disk case is skipped)"
    probe = Path("/tmp") / f"vs-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
        )
        if res.returncode != 0:
            return f"mount -t tmpfs failed: {res.stderr.decode(errors='replace').strip()}"
        subprocess.run(["umount", str(probe)], check=False)
        return None
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()
