"""Is the image a Ki-67 ratio is measured on a virtual stain? Then say so, and maybe no grade.

A virtual stain written by ``virtualstain stain`` (or saved from the viewer) carries the
engine's provenance in its OME-Zarr attributes (``napari_virtualstain``: the model's name,
sha256 and direction). A ratio measured on it counts what the model painted brown, not the
tissue's proliferation, so:

- every result carries "virtual stain (model X)" (the command's output and its JSON);
- when the model's card says it is not for diagnosis (a demonstration model, research use
  only), or no card of that model is found to say anything, or the source slide was stained
  with ``--force`` although it did not look like the model's input stain, no bin or WHO grade
  is given and the reason takes their place. A pathologist reading a grade must be able to
  trust it; a demonstration model's brown nuclei are not a Ki-67 assay.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from .run import RatioRun, mark_unverified

NOT_FOR_DIAGNOSIS = re.compile(
    r"not\s+for\s+(clinical\s+|diagnostic\s+)?(diagnos|clinical)|demonstration\s+model"
    r"|research\s+use\s+only|must\s+not\s+be\s+used\s+clinically",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class VirtualInput:
    """What the provenance says about a virtual stain, and what may be said of its ratio.

    Attributes
    ----------
    model : str
        The generator's name.
    direction : str
        Its card's direction ("he->ki67").
    sha256 : str or None
        Its weights' sha256, as recorded.
    for_diagnosis : bool
        False when its card says it is not for diagnosis, or no card was found: then no bin
        or grade is given.
    reason : str
        Why not ("" when ``for_diagnosis``).
    """

    model: str
    direction: str = ""
    sha256: str | None = None
    for_diagnosis: bool = False
    reason: str = ""

    @property
    def label(self) -> str:
        """ "virtual stain (model X)": the words every result of it carries."""
        return f"virtual stain (model {self.model})"

    def to_dict(self) -> dict:
        return {
            "virtual_stain": True,
            "label": self.label,
            "model": self.model,
            "direction": self.direction,
            "sha256": self.sha256,
            "for_diagnosis": self.for_diagnosis,
            "reason": self.reason,
        }


def read_provenance(path) -> dict | None:
    """The virtualstain provenance in an OME-Zarr folder's attributes, or None (none, or a file)."""
    from ..io import PROVENANCE_KEY

    folder = Path(path)
    for name, inner in ((".zattrs", None), ("zarr.json", "attributes")):
        meta = folder / name
        if not meta.is_file():
            continue
        try:
            attrs = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        attrs = attrs.get(inner, {}) if inner and isinstance(attrs, dict) else attrs
        prov = attrs.get(PROVENANCE_KEY) if isinstance(attrs, dict) else None
        return prov if isinstance(prov, dict) else None
    return None


def virtual_input(provenance: dict | None, cards=None) -> VirtualInput | None:
    """The virtual stain described by ``provenance`` (None when it is not a virtual stain).

    ``cards`` are the model cards to look the model up in (default: the registry's); it is
    matched by sha256, or by name when no sha256 was recorded.
    """
    model = (provenance or {}).get("model")
    if not isinstance(model, dict) or not model.get("name"):
        return None
    name, sha = str(model["name"]), model.get("sha256")
    found = VirtualInput(name, str(model.get("direction", "")), sha)
    source_check = provenance.get("source_stain_check") or {}
    if isinstance(source_check, dict) and source_check.get("forced"):
        return replace(found, reason="it was stained with --force from a slide that did not "
                       "look like the model's input stain")  # fmt: skip
    notes = model.get("notes")
    if notes is None:
        card = _find_card(name, sha, cards)
        if card is None:
            why = "its model card is not on this machine"
            why += f" (sha256 {sha[:12]}…)" if sha else ""
            return replace(found, reason=f"{why}: nothing says it is fit for diagnosis")
        notes = card.notes
    if NOT_FOR_DIAGNOSIS.search(str(notes)):
        return replace(found, reason="its model card says it is not for diagnosis")
    return replace(found, for_diagnosis=True)


def _find_card(name: str, sha: str | None, cards):
    if cards is None:
        from ..models.registry import list_models

        cards = [e.card for e in list_models() if e.card is not None]
    for card in cards:
        if (card.sha256 == sha) if sha else (card.name == name):
            return card
    return None


def mark_virtual(run: RatioRun, source: VirtualInput) -> RatioRun:
    """Every result of ``run`` says it was measured on ``source``; no grade unless its model
    is fit for diagnosis.

    The note is kept with each measurement, so a nucleus flipped later keeps it too.
    """
    items = []
    for m in run.measurements:
        if source.for_diagnosis:
            said = f"{m.result.name}: measured on a {source.label}, not on a real Ki-67 stain"
            result = replace(m.result, warnings=(said, *m.result.warnings))
            items.append(replace(m, result=result))
            continue
        note = f"{source.label}: {source.reason}"
        kept = "; ".join(n for n in (m.stain_note, note) if n)
        items.append(replace(m, stain_note=kept, result=mark_unverified(m.result, note)))
    provenance = {**run.provenance, "virtual_stain": source.to_dict()}
    return replace(run, measurements=tuple(items), provenance=provenance)
