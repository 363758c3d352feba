"""The architecture receptive field is measured once per torch version, then read from disk."""

from __future__ import annotations

import json

import pytest

from napari_virtualstain.core.models import receptive
from napari_virtualstain.core.models.receptive import arch_receptive_field


def clear_process_memo():
    for fn in (receptive._disk_cached_arch_rf, receptive._cached_arch_rf):
        fn.cache_clear()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_CACHE", str(tmp_path))
    clear_process_memo()
    yield tmp_path
    clear_process_memo()


def test_measured_once_then_read_from_the_user_cache(cache_dir):
    rf = arch_receptive_field("resnet_6blocks", ngf=64)
    path = cache_dir / "receptive_fields.json"
    known = json.loads(path.read_text())
    (key,) = known
    assert key.startswith("resnet_6blocks") and "torch" in key
    assert known[key]["rf_px"] == rf.rf_px
    # Another process (the memo cleared) reads the file instead of measuring: a changed
    # value in the file comes back as is.
    known[key]["rf_px"] = 12345
    path.write_text(json.dumps(known))
    clear_process_memo()
    assert arch_receptive_field("resnet_6blocks", ngf=8).rf_px == 12345  # width is not a key


def test_a_damaged_cache_file_is_measured_again_and_rewritten(cache_dir):
    path = cache_dir / "receptive_fields.json"
    path.write_text("{not json")
    rf = arch_receptive_field("resnet_6blocks")
    assert json.loads(path.read_text())  # rewritten, valid
    clear_process_memo()
    path.write_text(json.dumps({next(iter(json.loads(path.read_text()))): {"old": 1}}))
    assert arch_receptive_field("resnet_6blocks") == rf  # an old layout is measured again
