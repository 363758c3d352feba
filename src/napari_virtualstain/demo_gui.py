"""The demo with a display: napari with the sample slides and the plugin's dock widgets."""

from __future__ import annotations

WIDGETS = ("Slide", "Virtual stain", "Ki-67", "QA")


def open_demo_viewer(show: bool = True):
    """Create a viewer with the bundled samples and every dock widget that can be built."""
    import napari

    from napari_virtualstain._napari.sample_data import sample_he, sample_ki67

    viewer = napari.Viewer(title="napari-virtualstain demo", show=show)
    for data, kwargs, _ in sample_ki67() + sample_he():
        layer = viewer.add_image(data, **kwargs)
        if "Ki67" in layer.name:
            # Side by side in physical units: the Ki-67 crop to the right of the H&E.
            layer.translate = (0.0, float(data.shape[1] * kwargs["scale"][1] * 1.05))
    for name in WIDGETS:
        try:
            viewer.window.add_plugin_dock_widget("napari-virtualstain", name)
        except (
            Exception
        ) as exc:  # a widget whose optional dependency is missing must not stop the demo
            print(f"dock widget {name!r} not available: {exc}")
    viewer.reset_view()
    return viewer


def run_gui_demo() -> None:
    import napari

    open_demo_viewer(show=True)
    napari.run()
