"""What this tool may touch: output markers, a one-writer lock, and safe replacement.

A folder is only ever resumed or deleted when this tool wrote it, recognised by a marker file
inside it (and, to delete it, only when the user asked to overwrite). A folder without the
marker (the user's own OME-Zarr image, labels, a bioformats2raw layout, notes) is never deleted,
and neither is one of ours that has since gained files that are not part of an image.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import SlideWriteError

MARKER_NAME = ".napari-virtualstain.json"
SCRATCH_MARKER_NAME = ".napari-virtualstain-scratch"
TOOL = "napari-virtualstain"
_ZARR_META = {".zgroup", ".zattrs", ".zarray", ".zmetadata", "zarr.json"}
_CHUNK_NAME = re.compile(r"^(c|\d+)([./]\d+)*$")


def read_marker(folder: Path, name: str = MARKER_NAME, tool: str = TOOL) -> dict | None:
    """The marker ``name`` that ``tool`` wrote into ``folder``, or None (absent or not ours);
    the tiles command keeps its own (``core.train.tiles_out``)."""
    try:
        data = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == tool else None


def write_marker(folder: Path, state: str, **extra) -> None:
    from .atomic import write_json_atomic

    write_json_atomic(Path(folder) / MARKER_NAME, {"tool": TOOL, "state": state, **extra})


def unknown_entries(folder: Path, limit: int = 5) -> list[str]:
    """Entries of ``folder`` that are not part of an OME-Zarr image (or this tool's marker).

    Known: zarr metadata files, the marker, and array folders holding only zarr metadata and
    chunk files. Anything else (a ``labels`` group, text files, images) is unknown.
    """
    folder = Path(folder)
    found: list[str] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and (entry.name in _ZARR_META or entry.name == MARKER_NAME):
            continue
        if entry.is_dir() and entry.name.isdigit() and _is_plain_array(entry):
            continue
        found.append(entry.name)
        if len(found) >= limit:
            break
    return found


def _is_plain_array(folder: Path) -> bool:
    if not any((folder / m).is_file() for m in (".zarray", "zarr.json")):
        return False
    for root, _dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        if any(not _CHUNK_NAME.match(part) for part in rel.parts):
            return False
        if any(f not in _ZARR_META and not _CHUNK_NAME.match(f) for f in files):
            return False
    return True


def is_foreign(folder: Path) -> bool:
    """Whether ``folder`` is a non-empty folder that this tool did not write (no marker)."""
    folder = Path(folder)
    return folder.is_dir() and any(folder.iterdir()) and read_marker(folder) is None


def check_replaceable(path: Path) -> None:
    """Raise unless deleting ``path`` can lose nothing but an image this tool wrote.

    An OME-Zarr image without this tool's marker is refused too: it may be the only copy of
    someone's data (a save dialog pointed at it), and nothing tells it from a regenerable one.
    """
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise SlideWriteError(
            path, "exists and is a file, not an OME-Zarr folder; refusing to replace it"
        )
    if is_foreign(path):
        zarr = any((path / m).is_file() for m in (".zgroup", "zarr.json"))
        raise SlideWriteError(
            path,
            f"exists{'' if zarr else ', is not a zarr group'} and was not written by virtualstain "
            f"(no {MARKER_NAME} marker inside); overwrite replaces only outputs of this tool, "
            "so nothing was deleted. Choose another output",
        )
    unknown = unknown_entries(path) if any(path.iterdir()) else []
    if unknown:
        raise SlideWriteError(
            path,
            f"holds files that are not part of an OME-Zarr image ({', '.join(unknown)}); "
            "refusing to delete it, even with --overwrite. Choose another output",
        )


def is_scratch(folder: Path) -> bool:
    """Whether ``folder`` is a tile scratch folder created by this tool."""
    return (Path(folder) / SCRATCH_MARKER_NAME).is_file()


def make_scratch(out: Path) -> Path:
    """A new, uniquely named scratch folder next to ``out``, marked as this tool's."""
    import tempfile

    out = Path(out)
    folder = Path(tempfile.mkdtemp(prefix=f"{out.name}.tiles-", dir=out.parent))
    (folder / SCRATCH_MARKER_NAME).write_text(f"tile cache of {out.name}; safe to delete\n")
    return folder


def scratch_is_empty(folder: Path) -> bool:
    """No tile was written to ``folder`` (only our marker, possibly empty sub-folders)."""
    for _root, _dirs, files in os.walk(folder):
        if any(f != SCRATCH_MARKER_NAME for f in files):
            return False
    return True


class OutputLockedError(OSError):
    """Another process is writing the same output."""


def lock_path(out: Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``out`` (a ``.OUT.lock`` file beside it) while writing.

    The lock is an advisory ``flock``, so a killed writer never leaves a stale lock: the
    kernel releases it. A second writer is refused at once, naming the output.
    """
    path = lock_path(out)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, out)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, out: Path) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the O_CREAT file is the best effort
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = f" (process {int(Path(path).read_text().strip())})"
        raise OutputLockedError(
            f"{out}: another virtualstain run is writing it{holder}; wait for it to finish "
            f"or choose another output (lock file {path})"
        ) from None
    # The holder before us may have unlinked the file after we opened it: then our lock is on
    # a dead inode and a third writer could lock a new file. Refuse in that rare case.
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        same = False
    if not same:
        raise OutputLockedError(f"{out}: another virtualstain run just finished writing it; retry")
