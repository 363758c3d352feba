"""Atomic writes end with the permissions a plain ``open()`` would give (mkstemp's are 0600)."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest

from napari_virtualstain.core.io import atomic

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _writers(tmp_path):
    def with_path(p):
        with atomic.atomic_path(p) as tmp:
            tmp.write_bytes(b"II*\0")

    return {
        "json": (tmp_path / "r.json", lambda p: atomic.write_json_atomic(p, {"a": 1})),
        "csv": (tmp_path / "n.csv", lambda p: atomic.write_text_atomic(p, "a,b\n")),
        "tif": (tmp_path / "l.tif", with_path),
        "model card": (tmp_path / "card.json", lambda p: _card().to_json(p)),
    }


def _card():
    from napari_virtualstain.core.models import ModelCard

    return ModelCard(name="m", arch="resnet_6blocks", arch_kwargs={"ngf": 4}, mpp=0.5, tile_px=64)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_a_new_file_gets_the_mode_open_would_give(tmp_path, mask):
    with _umask(mask):
        for path, write in _writers(tmp_path).values():
            write(path)
            assert _mode(path) == 0o666 & ~mask, (path, oct(_mode(path)))
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what open() does, independently of our arithmetic
        assert _mode(tmp_path / "r.json") == _mode(plain)


def test_the_umask_is_read_without_changing_it():
    with _umask(0o027):
        assert atomic.current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # still what it was


@pytest.mark.parametrize("existing", [0o640, 0o604, 0o444])
def test_a_replaced_file_keeps_its_mode(tmp_path, existing):
    with _umask(0o022):
        for path, write in _writers(tmp_path).values():
            path.write_text("old")
            os.chmod(path, existing)
            write(path)
            assert path.read_bytes() != b"old"
            assert _mode(path) == existing, (path, oct(_mode(path)))
