"""Does a slide look like the stain a model expects as input? Checked before staining.

An H&E -> Ki-67 model fed a Ki-67 slide still paints something, and the result would be
labelled "virtual Ki-67". ``check_source_stain`` looks at a small overview of the tissue with
the H-DAB check of :mod:`..ki67.stain_check` (eosin share, the Macenko second stain, the optical
density H + DAB leave unexplained) and says whether it fits the source side of the model's
direction ("he->ki67": H&E in; "ki67->he": hematoxylin + DAB in):

- H&E is expected: the tissue must show eosin (the H-DAB check refuses it for eosin). No eosin
  is refused, naming what it looks like: hematoxylin + DAB, or hematoxylin alone.
- Hematoxylin + DAB (Ki-67 or another IHC) is expected: the H-DAB check must pass (hematoxylin
  alone passes too: a Ki-67 slide with few positive nuclei looks just like it).

Too little tissue to tell passes with a note, as does a source stain this module has no test for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

HE_STAINS = frozenset({"he", "hne", "h&e"})
HDAB_STAINS = frozenset({"ki67", "ihc", "hdab", "dab"})
# Below this angle between the Macenko second stain and DAB, an image without eosin is named
# "hematoxylin + DAB". Measured: IHC (OS-2, EndoNuke, skimage) 1-16 degrees; hematoxylin-only
# DSB 2018 tiles 19-30 degrees. It only chooses the wording: both are refused as H&E.
DAB_LIKE_DEG = 17.5
# The overview: at most this many pixels per side, read from a stored level.
OVERVIEW_SIDE_PX = 1024
# A stored level larger than this per side is sampled in windows rather than read whole.
MAX_READ_SIDE_PX = 8192
WINDOWS_PER_SIDE = 4

_NAMES = {
    "he": "H&E",
    "hdab": "hematoxylin + DAB (Ki-67 / IHC)",
    "hematoxylin": "hematoxylin alone",
    "greyscale": "greyscale",
}


@dataclass(frozen=True)
class SourceStainCheck:
    """The verdict on one slide against a model's input stain.

    Attributes
    ----------
    ok : bool
        The slide looks like the model's source stain (or could not be checked: see ``reason``).
    reason : str
        One line: what the slide looks like when refused; a note when passed unchecked; "".
    looks_like : str
        "he", "hdab", "hematoxylin", "greyscale", "other" or "" (not measured).
    expected : str
        The source stain of the direction ("he", "ki67", ...).
    forced : bool
        Stained although refused (``--force``).
    """

    ok: bool
    reason: str
    looks_like: str = ""
    expected: str = ""
    forced: bool = False

    def to_dict(self) -> dict:
        """JSON-ready, for provenance."""
        return {
            "ok": self.ok,
            "reason": self.reason,
            "looks_like": self.looks_like,
            "expected": self.expected,
            "forced": self.forced,
        }


def check_source_stain(rgb_overview: np.ndarray, direction: str) -> SourceStainCheck:
    """Whether ``rgb_overview`` looks like the input stain of a model of ``direction``.

    Parameters
    ----------
    rgb_overview : (H, W, 3) uint8 array
        A small view of the whole slide, glass included (e.g. ``source_overview(slide)``, or
        the coarsest level of a napari layer); about 1024 px per side is plenty.
    direction : str
        The model card's ``"source->target"``, e.g. ``"he->ki67"`` or ``"ki67->he"``.

    Returns
    -------
    SourceStainCheck
        ``ok`` False with a one-line ``reason`` ("looks like hematoxylin + DAB (Ki-67 / IHC),
        not H&E: ...") when the slide does not fit; the caller refuses unless forced.
    """
    from ..ki67.stain_check import check_hdab

    source = str(direction).split("->")[0].strip().lower()
    if source not in HE_STAINS | HDAB_STAINS:
        return SourceStainCheck(True, f"no check for source stain {source!r}", "", source)
    rgb = np.asarray(rgb_overview)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) RGB overview, got shape {rgb.shape}")
    hdab = check_hdab(rgb[..., :3])
    if hdab.ok and hdab.reason:  # too little tissue to tell
        return SourceStainCheck(True, hdab.reason, "", source)
    looks = _looks_like(hdab)
    expected = "he" if source in HE_STAINS else "hdab"
    # Hematoxylin alone is a Ki-67 slide with few positive nuclei as far as colour can tell.
    if looks == expected or (expected == "hdab" and hdab.ok):
        return SourceStainCheck(True, "", looks, source)
    what = describe(looks)
    why = hdab.reason or (
        f"no eosin; its second stain is {hdab.second_stain_to_dab_deg:.0f}° from DAB"
    )
    return SourceStainCheck(
        False,
        f"the slide looks like {what}, not {_NAMES[expected]} ({why}); the model's direction "
        f"is {direction}",
        looks,
        source,
    )


class SourceStainError(ValueError):
    """The slide does not look like the model's input stain (``check`` says what it looks like)."""

    def __init__(self, check: SourceStainCheck) -> None:
        self.check = check
        super().__init__(check.reason)


def verify_source_stain(slide, direction: str | None, force: bool = False):
    """The check before staining ``slide`` with a model of ``direction``: the one the CLI, the
    viewer's overlay and its Save all run.

    Returns None when there is nothing to check (no stated direction; a colourless slide,
    which the engine refuses itself), else the verdict. A mismatch raises
    ``SourceStainError`` unless ``force``: then the verdict comes back marked ``forced``.
    """
    from ..io.pixels import is_colourless

    if not direction or "greyscale" in (getattr(slide, "notes", "") or ""):
        return None
    if is_colourless(slide):
        return None
    check = check_source_stain(source_overview(slide), direction)
    if check.ok:
        return check
    if not force:
        raise SourceStainError(check)
    return replace(check, forced=True)


def provenance_of(check: SourceStainCheck | None) -> dict:
    """The provenance entries of a verdict (``{}`` for none): ``source_stain_check``, and a
    ``source_stain_note`` when the slide was stained although refused (``ratio`` then gives
    no grade on the output)."""
    if check is None:
        return {}
    out = {"source_stain_check": check.to_dict()}
    if check.forced:
        out["source_stain_note"] = (
            f"stained anyway (--force, or the viewer's 'stain anyway') although {check.reason}"
        )
    return out


def describe(looks_like: str) -> str:
    """A ``SourceStainCheck.looks_like`` in words ("hematoxylin + DAB (Ki-67 / IHC)", ...)."""
    return _NAMES.get(looks_like, "neither H&E nor hematoxylin + DAB")


def _looks_like(hdab) -> str:
    if hdab.ok:
        return "hdab" if hdab.second_stain_to_dab_deg < DAB_LIKE_DEG else "hematoxylin"
    if hdab.reason.startswith("eosin"):
        return "he"
    if hdab.reason.startswith("greyscale"):
        return "greyscale"
    return "other"


def source_overview(slide, side_px: int = OVERVIEW_SIDE_PX) -> np.ndarray:
    """A view of the whole ``slide`` of about ``side_px`` per side, from a stored level.

    Levels the reader built (``slide.built_levels``) are skipped: they are computed from level 0
    and would read the whole slide. A stored level still larger than ``MAX_READ_SIDE_PX`` (a
    flat slide) is sampled as a mosaic of ``WINDOWS_PER_SIDE``² windows spread over it.
    """
    levels = list(slide.levels)
    stored = levels[: max(1, len(levels) - int(getattr(slide, "built_levels", 0) or 0))]
    # the coarsest level that still has side_px pixels: coarser ones blur eosin away
    arr = next((a for a in reversed(stored) if max(a.shape[:2]) >= side_px), stored[0])
    h, w = int(arr.shape[0]), int(arr.shape[1])
    if max(h, w) <= MAX_READ_SIDE_PX:
        step = max(1, int(np.ceil(max(h, w) / side_px)))
        return np.asarray(arr[::step, ::step, :3])
    win = side_px // WINDOWS_PER_SIDE
    rows = []
    for y in np.linspace(0, h - win, WINDOWS_PER_SIDE).astype(int):
        cells = [np.asarray(arr[y : y + win, x : x + win, :3]) for x in
                 np.linspace(0, w - win, WINDOWS_PER_SIDE).astype(int)]  # fmt: skip
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)
