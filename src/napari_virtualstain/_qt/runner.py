"""Run a core progress generator off the GUI thread, with napari's progress bar and Cancel.

The one way widgets run long work (as stardist-napari does): ``run_in_worker`` wraps a
generator function of ``core`` (it yields ``core.progress.Progress`` and returns its result) in
napari's ``thread_worker``. Progress goes to napari's activity dock (``napari.utils.progress``)
and to the widget's own status label; a Cancel button quits the worker at its next ``yield``.
Only the small callbacks run on the GUI thread; the result is handed to ``on_done`` there, so
``on_done`` must only add or refresh layers, never compute.

When the widget goes (the viewer closed mid-run), the job is quit and none of its callbacks
touch the widget again: Qt has deleted the labels and buttons by then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from napari_virtualstain.core.progress import Cancelled, Progress

# what bad input raises (a clear message, shown in the widget's status); anything else is a bug
EXPECTED_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, Cancelled)


def report_if_bug(err: BaseException) -> None:
    """An error that bad input does not explain goes to napari's notifications, traceback
    included; expected ones (``EXPECTED_ERRORS``) are for the widget's status line only."""
    if not isinstance(err, EXPECTED_ERRORS):
        from napari.utils.notifications import notification_manager

        notification_manager.receive_error(type(err), err, err.__traceback__)


def quiet_relay(worker) -> None:
    """Stop napari relaying ``worker``'s errors as tracebacks: the caller handles them."""
    with contextlib.suppress(AttributeError, TypeError, RuntimeError):  # not connected
        worker.errored.disconnect(worker._relay_error)


class WorkerRunner:
    """One background job at a time for a widget: start, progress, cancel, done, error.

    ``status`` is a QLabel-like object (``setText``); ``cancel_button`` and ``start_buttons``
    are enabled / disabled as the job runs. A failed or cancelled job clears the progress bar
    and calls ``on_failed`` so the widget can clear stale numbers.
    """

    def __init__(self, status=None, cancel_button=None, start_buttons=()) -> None:
        self.status = status
        self.cancel_button = cancel_button
        self.start_buttons = tuple(start_buttons)
        self.worker = None
        self._busy = False
        self._pbar = None
        self.last_error: BaseException | None = None
        self.gone = False  # the widget was destroyed: callbacks do nothing
        if status is not None and hasattr(status, "destroyed"):
            status.destroyed.connect(self._widget_gone)
        if cancel_button is not None:
            cancel_button.setEnabled(False)
            cancel_button.clicked.connect(self.cancel)

    @property
    def running(self) -> bool:
        # from run() to the worker's end; ``is_running`` alone misses a thread not started yet
        return self._busy

    def run(
        self,
        gen_fn: Callable[..., Any],
        *args,
        on_done: Callable[[Any], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
        description: str = "",
        **kwargs,
    ):
        """Start ``gen_fn(*args, **kwargs)`` in a ``thread_worker``; returns the worker."""
        from napari.qt.threading import thread_worker
        from napari.utils import progress

        from .background import in_background

        if self.running:
            self._say("busy: cancel the running job first")
            return None
        self.last_error = None
        # errors are handled in _on_error: expected ones (bad input) go to the status line, not
        # to a traceback pop-up; anything else is still relayed to napari's notifications
        body = in_background(gen_fn)  # the GUI thread keeps its CPU share; see background.py
        worker = thread_worker(body, start_thread=False, ignore_errors=True)(*args, **kwargs)
        quiet_relay(worker)
        self._pbar = progress(total=0, desc=description or getattr(gen_fn, "__name__", "work"))
        worker.yielded.connect(self._on_progress)
        if on_done is not None:
            worker.returned.connect(lambda result: None if self.gone else on_done(result))
        worker.errored.connect(lambda err: self._on_error(err, on_failed))
        worker.aborted.connect(lambda: self._on_aborted(on_failed))
        worker.finished.connect(self._on_finished)
        self._set_busy(True)
        self.worker = worker
        worker.start()
        return worker

    def cancel(self) -> None:
        if self.worker is not None and self._busy:
            self.worker.quit()
            self._say("cancelling…")

    def _widget_gone(self, *_) -> None:
        self.gone = True
        self.status, self.cancel_button, self.start_buttons = None, None, ()
        if self.worker is not None and self._busy:
            self.worker.quit()

    # -- GUI-thread callbacks: cheap only ------------------------------------------------------
    def _on_progress(self, value) -> None:
        if not isinstance(value, Progress) or self.gone:
            return
        # the status first: updating napari's bar processes events, so the job's error or end
        # may be handled inside it, and must not be overwritten by this older report
        if value.message:
            pct = f" ({100 * value.fraction:.0f} %)" if value.total else ""
            self._say(f"{value.message}{pct}")
        pbar = self._pbar  # a local: updating the bar may run _on_finished, which drops it
        if pbar is not None:
            if pbar.total != value.total:
                pbar.total = value.total
            pbar.n = value.done
            pbar.set_description(value.message or pbar.desc)
            pbar.refresh()

    def _on_error(self, err: BaseException, on_failed) -> None:
        self.last_error = err
        if self.gone:
            return
        self._say(f"error: {err}")
        report_if_bug(err)
        if on_failed is not None:
            on_failed(str(err))

    def _on_aborted(self, on_failed) -> None:
        if self.gone:
            return
        self._say("cancelled")
        if on_failed is not None:
            on_failed("cancelled")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(busy)
        for button in self.start_buttons:
            button.setEnabled(not busy)

    def _say(self, text: str) -> None:
        if self.status is not None:
            self.status.setText(text)
