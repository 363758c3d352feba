"""Dock widgets as a user gets them: through napari's plugin menu, so with napari's viewer
proxy (``PublicOnlyProxy``), not built on the viewer directly."""

from __future__ import annotations


def plugin_dock(viewer, name: str):
    """The plugin's dock widget ``name`` ("Slide", "Virtual stain", "Ki-67", "QA") on ``viewer``."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-virtualstain", name)
    return widget
