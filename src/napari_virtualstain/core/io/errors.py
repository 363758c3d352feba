"""Errors raised by slide I/O. Each names the file it concerns."""

from __future__ import annotations


class SlideReadError(ValueError):
    """A file could not be opened as a slide; the message names the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot open slide '{path}': {reason}")

    def __reduce__(self):  # picklable across dask.distributed workers
        return (type(self), (self.path, self.reason))


class SlideWriteError(ValueError):
    """A pyramid could not be written; the message names the destination and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot write '{path}': {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))
