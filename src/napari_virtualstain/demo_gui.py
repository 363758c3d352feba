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
    from napari_virtualstain._napari.virtual_layer import open_overlay

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
    viewer.reset_view()
    ready: list = []
    if overlays:
        for layer_name, model in OVERLAYS.items():
            open_overlay(
                viewer, viewer.layers[layer_name], model, on_ready=ready.append, opacity=1.0
            )
    return viewer, ready


def run_gui_demo() -> None:
    import napari

    open_demo_viewer(show=True)
    napari.run()
