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


def same_region_differences(real, virtual) -> dict[str, float]:
    """Virtual minus real labelling index, for ROIs with the same name *and* the same outline.

    ``real`` and ``virtual`` are ``RatioRun``s of a declared pair (ROIs in µm, in the shared
    frame of a registered pair). An ROI redrawn elsewhere under the same name gets no Δ.
    """
    real_rois = {m.roi.name: m for m in real.measurements}
    out = {}
    for m in virtual.measurements:
        r = real_rois.get(m.roi.name)
        if r is None or r.roi.kind != m.roi.kind:
            continue
        a, b = np.asarray(r.roi.params, float), np.asarray(m.roi.params, float)
        if a.shape == b.shape and np.allclose(a, b, atol=0.5):  # µm
            out[m.roi.name] = m.result.labelling_index - r.result.labelling_index
    return out
