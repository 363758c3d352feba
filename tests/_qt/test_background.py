"""Background workers run at a lower CPU priority than the GUI thread (Linux: per thread)."""

from __future__ import annotations

import os
import sys
import threading

import pytest
import torch

from napari_virtualstain._qt.background import WORKER_NICE, in_background, lower_worker_priority
from napari_virtualstain.core.progress import Progress

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")


def nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def in_fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter (torch not imported yet); its stdout, stripped."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def in_thread(fn):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", fn()))
    thread.start()
    thread.join()
    return out["value"]


@linux
def test_a_worker_and_the_openmp_threads_it_starts_run_below_the_main_thread():
    main = nice_of(threading.get_native_id())
    assert lower_worker_priority() is False  # never on the main thread
    assert nice_of(threading.get_native_id()) == main

    def work():
        assert lower_worker_priority()
        before = set(os.listdir("/proc/self/task"))
        torch.conv2d(torch.randn(1, 8, 64, 64), torch.randn(8, 8, 3, 3))  # its OpenMP pool
        started = set(os.listdir("/proc/self/task")) - before
        return nice_of(threading.get_native_id()), [nice_of(int(t)) for t in started]

    own, pool = in_thread(work)
    assert own == max(main, WORKER_NICE)
    assert all(n == own for n in pool)  # torch's threads started by the worker inherit it
    assert nice_of(threading.get_native_id()) == main


@linux
def test_in_background_wraps_functions_and_generators_alike():
    own_nice = lambda: nice_of(threading.get_native_id())  # noqa: E731

    def function(x):
        return x, own_nice()

    def generator(x):
        yield own_nice()
        return x

    assert in_thread(lambda: in_background(function)(3)) == (3, max(nice_of(0), WORKER_NICE))

    def drain():
        gen = in_background(generator)(5)
        first = next(gen)
        with pytest.raises(StopIteration) as stop:
            next(gen)
        return first, stop.value.value

    assert in_thread(drain) == (max(nice_of(0), WORKER_NICE), 5)


@linux
def test_a_widget_job_runs_at_the_lower_priority(qtbot):
    from napari_virtualstain._qt.runner import WorkerRunner

    def job():
        yield Progress(0, 1, "checking")
        return nice_of(threading.get_native_id())

    runner, got = WorkerRunner(), []
    worker = runner.run(job, on_done=got.append)
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
    assert worker is not None and got == [max(nice_of(0), WORKER_NICE)]


def test_the_dock_warm_up_imports_torch_in_a_lower_priority_thread():
    """In a fresh process (here torch is imported already): the thread imports torch, with
    its native libraries loaded first, and leaves the switch interval as it was."""
    code = (
        "import sys, os, threading\n"
        "from napari_virtualstain._qt.background import warm_up_torch\n"
        "before = sys.getswitchinterval()\n"
        "thread = warm_up_torch()\n"
        "assert thread is not None and thread.daemon\n"
        "thread.join(120)\n"
        "import torch\n"
        "assert torch.ones(2).sum().item() == 2\n"
        "assert sys.getswitchinterval() == before\n"
        "assert warm_up_torch() is None  # once only\n"
        "print('ok')\n"
    )
    assert in_fresh_python(code) == "ok"


def test_workers_that_start_at_once_import_torch_one_after_the_other():
    """Three threads importing torch, torch.nn and torch.ao.quantization at once in a fresh
    process get half-initialised modules (3 of 3 tries here); as worker bodies they do not."""
    code = (
        "import importlib, threading\n"
        "from napari_virtualstain._qt.background import in_background\n"
        "errors = []\n"
        "def body(name):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as err:\n"
        "        errors.append(f'{name}: {type(err).__name__}: {err}')\n"
        "names = ('torch', 'torch.nn', 'torch.ao.quantization')\n"
        "threads = [threading.Thread(target=in_background(body), args=(n,)) for n in names]\n"
        "[t.start() for t in threads]\n"
        "[t.join(300) for t in threads]\n"
        "import torch\n"
        "assert torch.nn.Parameter and torch.ao.quantization.QConfig\n"
        "print(errors or 'ok')\n"
    )
    assert in_fresh_python(code) == "ok"


def test_a_worker_body_runs_with_short_gil_slices_and_restores_them():
    from napari_virtualstain._qt.background import SHORT_SWITCH_INTERVAL_S

    before = sys.getswitchinterval()

    def body():
        yield sys.getswitchinterval()

    assert in_thread(lambda: list(in_background(body)())) == [SHORT_SWITCH_INTERVAL_S]
    assert in_thread(lambda: in_background(sys.getswitchinterval)()) == SHORT_SWITCH_INTERVAL_S
    assert sys.getswitchinterval() == before
