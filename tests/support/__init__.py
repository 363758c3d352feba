"""Helpers shared by the tests (imported as ``tests.support``); fixtures live in conftest.py."""

from __future__ import annotations

from pathlib import Path

import napari_virtualstain

PACKAGE_DATA = Path(napari_virtualstain.__file__).resolve().parent / "data"
