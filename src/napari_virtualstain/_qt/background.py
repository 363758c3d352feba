"""Background workers yield the CPU to napari's GUI thread.

On a machine with few cores a torch worker keeps every core busy, and the GUI thread (and
Mesa's software renderer, where there is no GPU) waits for a time slice: the event loop stalls
although nothing heavy runs on it. Each worker thread therefore lowers its own scheduling
priority before it computes. On Linux the nice value is per thread, and the threads a thread
starts inherit it, so torch's OpenMP pool (one per calling thread) runs at the worker's
priority; the GUI thread keeps its own. Elsewhere (macOS, Windows) this does nothing.

The GIL is the other thing a worker takes from the GUI thread. The GUI thread needs it for
every Qt callback; while a worker runs Python (importing torch, numba compiling napari's labels
mapping, dask building a graph), CPython hands it over only every switch interval, 5 ms by
default, so a repaint that makes hundreds of callbacks stalled for 100-300 ms (traced with
``bench_gui_latency.py --dump-after-s``). A worker therefore runs with short GIL slices
(``short_gil_slices``; the interval is process-wide, and the last block to end restores it)
and imports torch without holding the GIL through libtorch's loading, one thread at a time
(``preload_torch``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

# Nice 10 weighs a thread about 10x lighter than nice 0 under Linux's fair scheduler: the
# worker still gets every cycle the GUI leaves idle.
WORKER_NICE = 10
# Python's default is 5 ms. At 0.5 ms a thread importing torch left the main thread's p95 gap
# at 17 ms instead of 61 ms in a probe.
SHORT_SWITCH_INTERVAL_S = 0.0005
_SLICES_LOCK = threading.Lock()
_SLICES_ACTIVE = 0
_SWITCH_BEFORE = [sys.getswitchinterval()]
_TORCH_IMPORT_LOCK = threading.Lock()
_TORCH_IMPORTED = threading.Event()


@contextlib.contextmanager
def short_gil_slices(interval_s: float = SHORT_SWITCH_INTERVAL_S) -> Iterator[None]:
    """Within the block (nestable, from several threads) the switch interval is at most
    ``interval_s``; the last one out restores what was set before the first one came in."""
    global _SLICES_ACTIVE
    with _SLICES_LOCK:
        if _SLICES_ACTIVE == 0:
            _SWITCH_BEFORE[0] = sys.getswitchinterval()
        _SLICES_ACTIVE += 1
        sys.setswitchinterval(min(sys.getswitchinterval(), interval_s))
    try:
        yield
    finally:
        with _SLICES_LOCK:
            _SLICES_ACTIVE -= 1
            if _SLICES_ACTIVE == 0:
                sys.setswitchinterval(_SWITCH_BEFORE[0])


def lower_worker_priority(nice: int = WORKER_NICE) -> bool:
    """Lower the calling thread's CPU priority to ``nice`` (never raise it; never on the main
    thread). Returns whether the thread now runs at that priority or lower. A pooled thread
    (napari's workers run in Qt's global thread pool) keeps it for its later jobs, which are
    background work too."""
    # Only Linux takes a thread id here; elsewhere the same number could name another process.
    if not sys.platform.startswith("linux"):
        return False
    if threading.current_thread() is threading.main_thread():
        return False
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # a sandbox that refuses it: run as before
        return False
    return True


def in_background(fn):
    """Wrap a worker body (function or generator function): it runs at lower priority, only
    once torch is imported (``preload_torch``; at once when it already is), and with short
    GIL slices (``short_gil_slices``): Python-heavy stretches of a job (dask building a graph,
    numba compiling) then hand the GIL to the GUI thread every 0.5 ms instead of every 5 ms.
    Where the GUI thread does not ask for the GIL the shorter slices change nothing."""
    import functools
    import inspect

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            lower_worker_priority()
            preload_torch()
            with short_gil_slices():
                return (yield from fn(*args, **kwargs))

        return generator

    @functools.wraps(fn)
    def function(*args, **kwargs):
        lower_worker_priority()
        if fn is not preload_torch:
            preload_torch()
        with short_gil_slices():
            return fn(*args, **kwargs)

    return function


def preload_torch() -> None:
    """Import torch in a worker without stalling the GUI thread for its native libraries.

    Importing torch loads libtorch (hundreds of MB of relocations) while holding the GIL: the
    GUI thread stood still for 220 ms here. On Linux the extension's libraries are first
    loaded through libc's ``dlopen`` called via ctypes, which releases the GIL, so the import
    that follows finds them loaded (worst event-loop gap 220 -> 71 ms in a probe). The rest of
    the import is Python code, which hands the GIL over only every switch interval (5 ms): a
    GUI thread that needs it for every Qt callback waits that long each time. The interval is
    0.5 ms while torch imports (p95 gap 61 -> 17 ms in the probe), then restored.

    Every worker body goes through here (``in_background``), under one lock: torch's first
    import must not overlap another thread's import of torch or of one of its submodules.
    When it did (the dock's warm-up and the demo's opening workers at once), Python's import
    deadlock detection handed one thread a half-initialised torch ("partially initialized
    module 'torch' has no attribute 'library'").
    """
    if _TORCH_IMPORTED.is_set():
        return
    with _TORCH_IMPORT_LOCK:
        if _TORCH_IMPORTED.is_set():
            return
        if "torch" not in sys.modules and sys.platform.startswith("linux"):
            _dlopen_without_gil("torch", "_C.*.so")
        with short_gil_slices():
            import torch  # noqa: F401
        _TORCH_IMPORTED.set()


def _dlopen_without_gil(package: str, pattern: str) -> None:
    import ctypes
    import glob
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            return
        found = glob.glob(os.path.join(os.path.dirname(spec.origin), pattern))
        if len(found) != 1:
            return
        libc = ctypes.CDLL(None)  # a CDLL function call releases the GIL
        libc.dlopen.restype = ctypes.c_void_p
        libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
        libc.dlopen(found[0].encode(), os.RTLD_NOW)  # the import loads it again (refcount)
    except (OSError, AttributeError, ValueError):  # no libc dlopen here: the import does it
        return


def warm_up_torch() -> threading.Thread | None:
    """Start importing torch in a low-priority daemon thread, if nobody has yet.

    The Virtual stain dock calls this when it opens, so that torch (about 1.2 s to import
    here) is loaded while the user picks a model, not after Start. Returns the thread.
    """
    if _TORCH_IMPORTED.is_set() or "torch" in sys.modules:
        return None
    thread = threading.Thread(
        target=in_background(preload_torch), name="virtualstain-torch-import", daemon=True
    )
    thread.start()
    return thread
