"""The permission bits a file written through a temporary file should end with.

``tempfile.mkstemp`` creates files readable by their owner only; a file renamed into place
from it kept 0600 even under umask 022, so a lab sharing a folder could not read the outputs.
Standard library only: the model card and registry use it without importing ``core.io``.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def final_mode(path: str | Path) -> int:
    """The permission bits ``path`` should end with: those it has, else what ``open()`` gives."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask, read without changing it where Linux's /proc tells it."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way is to set it and put it back; 0o022 (not 0) is what another
    # thread creating a file in that instant would get.
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask
