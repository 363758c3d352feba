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
