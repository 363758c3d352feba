"""The CLI's one progress style: a tqdm bar fed by ``core.progress.Progress`` reports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from napari_virtualstain.core.progress import OnProgress, Progress


@contextlib.contextmanager
def tqdm_progress(desc: str, quiet: bool = False, unit: str = "step") -> Iterator[OnProgress]:
    """A callback that shows ``Progress`` reports on one tqdm bar (on stderr); closes it after."""
    if quiet:
        yield lambda _p: None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, unit=unit, desc=desc, leave=True)

    def on_progress(p: Progress) -> None:
        if bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        if p.message:
            bar.set_postfix_str(p.message, refresh=False)
        bar.refresh()

    try:
        yield on_progress
    finally:
        bar.close()
