"""One progress protocol for all long work: generators that yield ``Progress`` and return a result.

Long work in ``core`` is written as a generator (as stardist-napari does): it yields ``Progress``
reports and ends with ``return result``. Callers choose how to run it:

- ``drain(gen, on_progress, cancel)`` runs it here (scripts, tests, the CLI through
  ``cli.progress.tqdm_progress``);
- ``napari_virtualstain._qt.runner.run_in_worker`` runs it in napari's ``thread_worker`` with
  napari's ``progress`` bar and a Cancel button.

Cancelling is cooperative and the same everywhere: a ``CancelToken`` checked between steps by
``drain`` (and by long loops that take one), or the worker's ``quit()``, which stops the
generator at its next ``yield``. Both end in ``Cancelled``, never in a half-written result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps, what is being done, and optional numbers (losses, counts)."""

    done: int
    total: int
    message: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.total < 0 or self.done < 0:
            raise ValueError(f"progress must be >= 0, got {self.done}/{self.total}")

    @property
    def fraction(self) -> float:
        """0..1 (1 when there is nothing to do)."""
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


ProgressGenerator = Generator[Progress, None, T]
OnProgress = Callable[[Progress], None]


class Cancelled(Exception):
    """Raised when work was cancelled; nothing it would have written was written."""


class CancelToken:
    """A thread-safe flag that a GUI or a signal handler sets and the work checks."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")


def drain(
    gen: Generator[Progress, None, T],
    on_progress: OnProgress | None = None,
    cancel: CancelToken | None = None,
) -> T:
    """Run a progress generator to its end and return its ``return`` value.

    With ``cancel`` set, the generator is closed at its next step (its ``finally`` blocks run)
    and ``Cancelled`` is raised.
    """
    while True:
        if cancel is not None and cancel.cancelled:
            gen.close()
            raise Cancelled("cancelled")
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(step)


def callback_steps(on_progress: OnProgress | None, total: int, message: str = ""):
    """A ``step(done)`` function for loops that report through a callback instead of yielding."""

    def step(done: int, note: str = "") -> None:
        if on_progress is not None:
            on_progress(Progress(done, total, note or message))

    return step
