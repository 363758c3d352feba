"""``core.progress.blocking``: the blocking twin of a progress generator function."""

from __future__ import annotations

import inspect

from napari_virtualstain.core.progress import Progress, blocking


def iter_count(n: int, label: str = "step", *, start: int = 0):
    for i in range(start, n):
        yield Progress(i, n, label)
    return n - start


def test_the_twin_takes_the_same_arguments_reports_and_returns_the_result():
    count = blocking(iter_count)
    reports = []
    assert count(3, "x", start=1, progress=reports.append) == 2
    assert [(r.done, r.message) for r in reports] == [(1, "x"), (2, "x")]
    assert count(2) == 2  # progress is optional
    assert count.__name__ == "count" and "iter_count" in count.__doc__
    params = inspect.signature(count).parameters
    assert list(params) == ["n", "label", "start", "progress"]
    assert params["progress"].kind is inspect.Parameter.KEYWORD_ONLY
