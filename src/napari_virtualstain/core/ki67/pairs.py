"""Which real stain a virtual stain may be compared with: declared pairs, never layer names.

A "Δ vs real" is only meaningful between a virtual stain and the real stain it came from or
was registered to, measured on the same region. Both facts come from provenance (layer
metadata), written by the plugin when it makes a virtual stain or registers a slide:

- ``metadata["virtualstain"]`` marks a virtual stain (the engine's provenance record, with its
  ``source`` slide); ``metadata["source_layer"]`` names the layer it was made from;
- ``metadata["registered_to"]`` on either layer, or ``metadata["real_layer"]`` on the virtual
  one, names the other layer of a registered pair.

A layer called "virtual ..." without that metadata is not a virtual stain here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def is_virtual(metadata: Mapping | None) -> bool:
    """The layer is a virtual stain made by this plugin (its provenance says so)."""
    return bool(metadata) and "virtualstain" in metadata


def declared_real(name: str, metadata: Mapping[str, Mapping | None]) -> str | None:
    """The real layer declared as ``name``'s pair, among the layers in ``metadata``.

    ``metadata`` maps layer names to their metadata. Returns None when ``name`` is not a
    virtual stain or no real layer is declared for it.
    """
    meta = metadata.get(name) or {}
    if not is_virtual(meta):
        return None

    def real(other) -> bool:
        return (
            bool(other) and other != name and other in metadata and not is_virtual(metadata[other])
        )

    # Registered pairs first, then the layer / slide the virtual stain was made from.
    for other in (meta.get("real_layer"), meta.get("registered_to")):
        if real(other):
            return other
    for other, m in metadata.items():
        if (m or {}).get("registered_to") == name and real(other):
            return other
    if real(meta.get("source_layer")):
        return meta["source_layer"]
    source = (meta.get("virtualstain") or {}).get("source") or {}
    path = source.get("path")
    for other, m in metadata.items():
        if path and (m or {}).get("slide_path") == path and real(other):
            return other
    return None


def same_region_differences(
    real, virtual, real_outlines: Mapping | None = None, virtual_outlines: Mapping | None = None
) -> dict[str, float]:
    """Virtual minus real labelling index, for ROIs with the same name *and* the same region.

    ``real`` and ``virtual`` are ``RatioRun``s of a declared pair. The region is compared on
    ``*_outlines`` (ROI name -> (N, 2) vertices in a frame both share, e.g. napari world
    coordinates of a registered pair) when both are given, else on the ROIs' own µm outlines
    (pairs on one pixel grid). An ROI redrawn elsewhere under the same name gets no Δ, and
    neither does a run whose stain check failed (measured anyway): an H&E measured as Ki-67
    has no labelling index to compare with.
    """
    if not (real.stain_verified and virtual.stain_verified):
        return {}
    if real_outlines is None or virtual_outlines is None:
        real_outlines = {m.roi.name: m.roi.params for m in real.measurements}
        virtual_outlines = {m.roi.name: m.roi.params for m in virtual.measurements}
    real_li = {r.name: r.labelling_index for r in real.results}
    out = {}
    for r in virtual.results:
        if r.name not in real_li or r.name not in real_outlines or r.name not in virtual_outlines:
            continue
        a = np.asarray(real_outlines[r.name], float)
        b = np.asarray(virtual_outlines[r.name], float)
        if a.shape == b.shape and np.allclose(a, b, atol=0.5):
            out[r.name] = r.labelling_index - real_li[r.name]
    return out
