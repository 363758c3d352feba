"""The demo with a display: napari with the sample slides, their virtual stains and the docks."""

from __future__ import annotations

WIDGETS = ("Slide", "Virtual stain", "Ki-67", "QA")
OVERLAYS = {"OS-1-detail_HE": "demo-he2ki67", "OS-2-ndpi_Ki67": "demo-ki672he"}


def open_demo_viewer(show: bool = True, overlays: bool = True):
    """A viewer with the bundled H&E and Ki-67 side by side, every dock widget, and (when
    ``overlays``) the demo pair's virtual Ki-67 over the H&E and virtual H&E over the Ki-67,
    computed off the GUI thread for the tiles in view.

    Returns the viewer and a list that receives each ``VirtualOverlay`` once it is ready.
    """
    import napari

    from napari_virtualstain._napari.sample_data import sample_he, sample_ki67
    from napari_virtualstain._qt.virtual_overlay import open_overlay

    viewer = napari.Viewer(title="napari-virtualstain demo", show=show)
    for data, kwargs, _ in sample_he() + sample_ki67():
        layer = viewer.add_image(data, **kwargs)
        if layer.name == "OS-2-ndpi_Ki67":
            # Side by side in physical units: the Ki-67 crop to the right of the H&E.
            he = viewer.layers["OS-1-detail_HE"]
            layer.translate = (0.0, float(he.extent.world[1][1] * 1.05))
    for name in WIDGETS:
        try:
            viewer.window.add_plugin_dock_widget("napari-virtualstain", name, tabify=True)
        except (
            Exception
        ) as exc:  # a widget whose optional dependency is missing must not stop the demo
            print(f"dock widget {name!r} not available: {exc}")
    if show:
        size_window(viewer)
    raise_dock(viewer, "Virtual stain")
    viewer.reset_view()
    ready: list = []
    if overlays:
        for layer_name, model in OVERLAYS.items():
            open_overlay(
                viewer, viewer.layers[layer_name], model, on_ready=ready.append, opacity=0.6
            )
    return viewer, ready


def size_window(viewer, min_w: int = 1600, min_h: int = 1000) -> None:
    """At least ``min_w`` x ``min_h`` where the screen allows it, else maximised."""
    from napari_virtualstain._qt.viewer_access import qt_window

    window = qt_window(viewer)
    screen = window.screen().availableGeometry() if window.screen() else None
    if screen is None or screen.width() < min_w or screen.height() < min_h:
        window.showMaximized()
        return
    w, h = max(min_w, int(screen.width() * 0.85)), max(min_h, int(screen.height() * 0.85))
    window.resize(min(w, screen.width()), min(h, screen.height()))
    window.move(screen.x() + (screen.width() - window.width()) // 2,
                screen.y() + (screen.height() - window.height()) // 2)  # fmt: skip


def raise_dock(viewer, name: str) -> None:
    """Bring the tabbed dock whose title holds ``name`` to the front."""
    for title, widget in viewer.window.dock_widgets.items():
        if name in title:
            qt_widget = widget.native if hasattr(widget, "native") else widget
            dock = qt_widget.parent()  # the QDockWidget wrapper (napari's documented route)
            dock.show()
            dock.raise_()
            return


def run_gui_demo() -> None:
    import napari

    open_demo_viewer(show=True)
    napari.run()
