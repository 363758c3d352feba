"""Short GIL time slices while a worker runs long stretches of Python.

The GUI thread needs the GIL for every Qt callback. While another thread runs Python code
(importing torch, numba compiling napari's labels mapping), CPython hands the GIL over only
every switch interval, 5 ms by default, so each callback can wait that long and a repaint that
makes hundreds of them stalls for 100-300 ms (traced with ``bench_gui_latency.py
--dump-after-s``). For such stretches the interval is lowered, then restored (it is
process-wide: the last block to end restores it).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

# Python's default is 5 ms. At 0.5 ms a thread importing torch left the main thread's p95 gap
# at 17 ms instead of 61 ms in a probe.
SHORT_SWITCH_INTERVAL_S = 0.0005
_LOCK = threading.Lock()
_ACTIVE = 0
_BEFORE = [sys.getswitchinterval()]


@contextlib.contextmanager
def short_gil_slices(interval_s: float = SHORT_SWITCH_INTERVAL_S) -> Iterator[None]:
    """Within the block (nestable, from several threads) the switch interval is at most
    ``interval_s``; the last one out restores what was set before the first one came in."""
    global _ACTIVE
    with _LOCK:
        if _ACTIVE == 0:
            _BEFORE[0] = sys.getswitchinterval()
        _ACTIVE += 1
        sys.setswitchinterval(min(sys.getswitchinterval(), interval_s))
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE -= 1
            if _ACTIVE == 0:
                sys.setswitchinterval(_BEFORE[0])
