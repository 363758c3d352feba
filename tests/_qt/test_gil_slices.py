"""Short GIL slices: lowered inside the blocks, restored when the last one ends."""

from __future__ import annotations

import sys
import threading

from napari_virtualstain._qt.background import SHORT_SWITCH_INTERVAL_S, short_gil_slices


def test_blocks_in_several_threads_restore_the_interval_when_the_last_one_ends():
    before = sys.getswitchinterval()
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with short_gil_slices():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    with short_gil_slices(), short_gil_slices():  # nested, alongside the other thread
        assert sys.getswitchinterval() == SHORT_SWITCH_INTERVAL_S
    assert sys.getswitchinterval() == SHORT_SWITCH_INTERVAL_S  # the other block still runs
    release.set()
    thread.join(10)
    assert sys.getswitchinterval() == before


def test_the_interval_is_restored_after_an_error():
    before = sys.getswitchinterval()
    try:
        with short_gil_slices():
            raise KeyError("inside")
    except KeyError:
        pass
    assert sys.getswitchinterval() == before
