"""The viewer a dock widget is given, and its Qt main window.

napari hands plugin dock widgets a ``PublicOnlyProxy`` of the viewer: every attribute read
returns a new proxy, so ``a is b`` fails between two reads of one layer, and Qt refuses a
proxied window as a ``QObject`` parent (Start then failed with ``QTimer(parent...): argument 1
has unexpected type 'PublicOnlyProxy'``). The docks keep the viewer itself, unwrapped once
here, as napari's own widgets do.
"""

from __future__ import annotations


def unproxied(obj):
    """``obj`` without napari's ``PublicOnlyProxy`` (or ``obj`` when it is not one)."""
    from wrapt import ObjectProxy  # napari's proxies are wrapt's (a napari dependency)

    while isinstance(obj, ObjectProxy):
        obj = obj.__wrapped__
    return obj


def qt_window(viewer):
    """The viewer's ``QMainWindow``, or None for a viewer without a window (``show=False``
    viewers have one; a bare ``ViewerModel`` does not)."""
    window = getattr(unproxied(viewer), "window", None)
    return None if window is None else getattr(unproxied(window), "_qt_window", None)


def watch_layers(viewer, refresh) -> None:
    """Call ``refresh()`` (a dock widget's method) whenever a layer of ``viewer`` is added,
    removed or renamed.

    A rename first renames the layer's item in the widget's combo boxes, so a chosen layer
    stays chosen under its new name (a renamed ROI layer was offered under its old name, and
    computing with it failed: "'tiny' is not in list"). Only a weak reference to the widget
    is kept; once it is gone (or Qt deleted it) nothing is called.
    """
    import weakref

    from qtpy.QtWidgets import QComboBox

    method = weakref.WeakMethod(refresh)
    names: dict[int, str] = {}  # id(layer) -> its name before a rename

    def live_refresh():
        bound = method()
        if bound is None:
            return None
        try:
            bound.__self__.objectName()  # raises RuntimeError once Qt deleted the widget
        except RuntimeError:
            return None
        return bound

    def on_rename(event) -> None:
        layer = event.source
        old, names[id(layer)] = names.get(id(layer)), layer.name
        bound = live_refresh()
        if bound is None:
            return
        if old and old != layer.name:
            for combo in bound.__self__.findChildren(QComboBox):
                index = combo.findText(old)
                if index >= 0:
                    combo.setItemText(index, layer.name)
        bound()

    def track(layer) -> None:
        names[id(layer)] = layer.name
        layer.events.name.connect(on_rename)

    def on_inserted(event) -> None:
        track(event.value)
        if (bound := live_refresh()) is not None:
            bound()

    def on_removed(event) -> None:
        names.pop(id(event.value), None)
        event.value.events.name.disconnect(on_rename)
        if (bound := live_refresh()) is not None:
            bound()

    layers = unproxied(viewer).layers
    for layer in layers:
        track(layer)
    layers.events.inserted.connect(on_inserted)
    layers.events.removed.connect(on_removed)
