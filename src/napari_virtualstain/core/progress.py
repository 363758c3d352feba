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

import inspect
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


def blocking(
    iter_fn: Callable[..., Generator[Progress, None, T]], name: str | None = None
) -> Callable[..., T]:
    """The blocking twin of the progress generator function ``iter_fn``, so that its arguments
    are written once: the twin takes the same arguments plus an optional keyword ``progress``
    (given each report), runs the generator with :func:`drain` and returns its result.

    ``name`` defaults to ``iter_fn``'s name without its ``iter_`` prefix.
    """

    def run(*args, progress: OnProgress | None = None, **kwargs) -> T:
        return drain(iter_fn(*args, **kwargs), progress)

    run.__name__ = run.__qualname__ = name or iter_fn.__name__.removeprefix("iter_")
    run.__module__ = iter_fn.__module__
    run.__doc__ = f"Blocking form of :func:`{iter_fn.__name__}`; ``progress`` gets each report."
    # help() and inspect.signature show the generator's arguments and ``progress``
    signature = inspect.signature(iter_fn)
    params = list(signature.parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    params.insert(at, inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=None))
    run.__signature__ = signature.replace(
        parameters=params, return_annotation=inspect.Signature.empty
    )
    return run


def callback_steps(on_progress: OnProgress | None, total: int, message: str = ""):
    """A ``step(done)`` function for loops that report through a callback instead of yielding."""

    def step(done: int, note: str = "") -> None:
        if on_progress is not None:
            on_progress(Progress(done, total, note or message))

    return step
