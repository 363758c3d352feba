"""core/ must import with napari and every Qt binding blocked."""

import pkgutil
import subprocess
import sys

import napari_virtualstain.core as core

BLOCKER = r"""
import importlib.abc, sys
BLOCKED = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED and not name.startswith("napari_virtualstain"):
            raise ImportError(f"core imported {name}")
sys.meta_path.insert(0, Block())
import importlib
for mod in MODULES:
    importlib.import_module(mod)
print("imported", len(MODULES))
"""


def core_modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(core.__path__, prefix="napari_virtualstain.core.")
        if not m.name.split(".")[-1].startswith("test")
    ]


def test_core_imports_without_napari_or_qt():
    modules = ["napari_virtualstain.core", *core_modules(), "napari_virtualstain.demo"]
    code = f"MODULES = {modules!r}\n" + BLOCKER
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"imported {len(modules)}" in result.stdout
