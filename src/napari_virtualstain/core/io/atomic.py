"""Write output files atomically: a temporary file in the same folder, renamed into place.

A failed write (full disk, permission, an exception while producing the content) leaves the
previous file intact and no temporary file behind. The file gets the permissions a plain
``open()`` would give it (``0o666`` less the umask), or keeps those of the file it replaces:
``mkstemp`` alone would leave every output readable by its owner only.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..filemode import current_umask, final_mode  # noqa: F401 - current_umask re-exported


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path``; on success it replaces ``path`` in one rename.

    Use it for writers that want a file name (tifffile, PIL, matplotlib): write to the yielded
    path. The suffix is kept so that writers choosing a format by extension still work.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=folder
        )
    except OSError as err:
        raise _naming(err, path) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, final_mode(path))
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and str(path) not in str(err):
            raise _naming(err, path) from err
        raise


def _naming(err: OSError, path: Path) -> OSError:
    """The same error, naming the output file rather than a temporary one (or none)."""
    if err.errno is None:
        return OSError(f"{path}: {err}")
    if not err.strerror:
        return err
    try:
        return type(err)(err.errno, err.strerror, str(path))
    except TypeError:  # a subclass with its own signature
        return OSError(err.errno, err.strerror, str(path))


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO[Any]]:
    """``open`` for writing, atomically (``mode`` "w" or "wb"); flushed and fsynced before rename."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode must be 'w' or 'wb', got {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """JSON to ``path`` atomically; the object is serialised before the file is touched."""
    text = json.dumps(obj, indent=indent)
    return write_text_atomic(path, text + "\n")


def check_writable_file(path: str | Path) -> Path:
    """Fail early, before any work, when ``path`` cannot become an output file.

    Raises ``IsADirectoryError`` for a folder, ``FileNotFoundError`` for a missing parent folder
    and ``PermissionError`` for an unwritable one, each naming the path.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{path}: folder {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{path}: file is not writable")
    return path
