"""``WorkerRunner`` when its widget goes mid-run (the viewer closed): the job is quit and no
callback touches the deleted labels and buttons."""

from __future__ import annotations

import time

import pytest
from qtpy.QtWidgets import QLabel, QPushButton, QWidget

from napari_virtualstain._qt.layouts import column
from napari_virtualstain._qt.runner import WorkerRunner
from napari_virtualstain.core.progress import Progress


def slow_job(steps: int = 200, step_s: float = 0.02):
    for i in range(steps):
        time.sleep(step_s)
        yield Progress(i + 1, steps, "working")
    return "result"


@pytest.mark.parametrize("ends", ["returns", "quits"])
def test_a_deleted_widget_gets_no_callbacks(qtbot, capfd, ends):
    widget = QWidget()
    status, cancel, start = QLabel(), QPushButton("Cancel"), QPushButton("Start")
    column(widget, status, cancel, start)
    runner = WorkerRunner(status, cancel, [start])
    done = []
    steps = 30 if ends == "returns" else 10_000
    worker = runner.run(slow_job, steps, on_done=done.append, on_failed=done.append)
    qtbot.waitUntil(lambda: "working" in status.text(), timeout=10_000)
    widget.deleteLater()
    qtbot.waitUntil(lambda: runner.gone, timeout=10_000)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=20_000)  # quit, or ran to its end
    qtbot.wait(200)
    assert done == []  # neither the result nor the cancellation reached the deleted widget
    err = capfd.readouterr().err
    assert "has been deleted" not in err and "Traceback" not in err


def test_a_live_widget_gets_its_result(qtbot):
    status = QLabel()
    runner = WorkerRunner(status)
    done = []
    runner.run(slow_job, 3, 0.0, on_done=done.append)
    qtbot.waitUntil(lambda: done == ["result"], timeout=10_000)
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
