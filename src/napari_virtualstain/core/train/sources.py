"""What a tile folder says about itself: where each tile lies and its pixel size (index.csv).

Folders written by ``virtualstain tiles`` carry an ``index.csv`` (slide, level, y, x, read_px,
mpp per tile); :func:`split_folder` uses it for an overlap-free hold-out (see ``split.py``) and
:func:`folder_mpp` for the pixel size. Plain image folders have neither: they are split by file
name, which the description says plainly, and their pixel size is what the user states.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath

from .split import Footprint, list_images, plan_split, split_files
from .tiles_out import INDEX_NAME

MPP_REL_TOL = 0.01


@dataclass(frozen=True)
class FolderSplit:
    """Training and held-out tiles of one folder, the dropped guard tiles, and a description."""

    train: tuple[Path, ...]
    test: tuple[Path, ...]
    guard: tuple[Path, ...]
    description: str


def _index_rows(folder: Path):
    from .tiles import read_index

    return read_index(folder / INDEX_NAME) if (folder / INDEX_NAME).is_file() else None


def split_folder(folder: str | Path, test_fraction: float) -> FolderSplit:
    """Split a tile folder so that no held-out tile shares a pixel with a training tile.

    With an ``index.csv``: by slide when the tiles come from several slides, else by spatial
    blocks with a guard band (``split.plan_split``). Without one: by a hash of the file name,
    and the description says that tiles may overlap.

    Raises
    ------
    ValueError
        Images in the folder that its ``index.csv`` does not list, or no overlap-free split.
    """
    folder = Path(folder)
    files = list_images(folder)
    rows = _index_rows(folder)
    if rows is None:
        train, test = split_files(files, test_fraction)
        note = "; split by file name, tiles may overlap" if test else "; nothing held out"
        return FolderSplit(train, test, (), f"{len(train)} train / {len(test)} held-out tiles"
                           f"{note} (no {INDEX_NAME}) from {folder}")  # fmt: skip
    by_name = {r.file: r for r in rows}
    unlisted = [f.name for f in files if f.name not in by_name]
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (" ..." if len(unlisted) > 5 else "")
        raise ValueError(
            f"{folder}: {len(unlisted)} image(s) are not in its {INDEX_NAME} ({shown}); their "
            "position is unknown, so no overlap-free hold-out can be made. Move them out"
        )
    records = [by_name[f.name] for f in files]
    plan = plan_split(
        [Footprint(r.slide, r.level, r.y, r.x, r.read_px) for r in records], test_fraction
    )
    chosen = {p: tuple(f for f, part in zip(files, plan.parts, strict=True) if part == p)
              for p in ("train", "test", "guard")}  # fmt: skip
    slides = sorted({PurePath(r.slide).name for r in records})
    return FolderSplit(chosen["train"], chosen["test"], chosen["guard"],
                       f"{plan.describe()}; from {folder} (slides: {', '.join(slides)})")  # fmt: skip


def folder_mpp(folder: str | Path) -> float | None:
    """The pixel size its ``index.csv`` states, None without an index or an mpp there.

    Raises ``ValueError`` when the index's rows state different pixel sizes.
    """
    rows = _index_rows(Path(folder))
    values = sorted({r.mpp for r in rows or () if r.mpp is not None})
    if values and not math.isclose(values[0], values[-1], rel_tol=MPP_REL_TOL):
        raise ValueError(f"{folder}: its {INDEX_NAME} lists tiles at {values} µm/px; train on "
                         "tiles of one pixel size")  # fmt: skip
    return values[0] if values else None


def pairs_mpp(root: str | Path) -> float | None:
    """The pixel size a ``pairs`` run's ``pairs.csv`` states, None without one."""
    import csv

    index = Path(root) / "pairs.csv"
    if not index.is_file():
        return None
    with open(index, newline="") as handle:
        values = sorted({float(r["mpp"]) for r in csv.DictReader(handle)
                         if r.get("mpp") not in (None, "", "None")})  # fmt: skip
    if values and not math.isclose(values[0], values[-1], rel_tol=MPP_REL_TOL):
        raise ValueError(f"{index} lists pairs at {values} µm/px; train on one pixel size")
    return values[0] if values else None


def resolve_mpp(given: float | None, stated: Mapping[str, float | None]) -> float | None:
    """The pixel size a run records: the folders' stated mpp (``stated``: source -> mpp or
    None), which must agree with each other and with ``given``; else ``given``.

    Raises ``ValueError`` naming the sources that disagree.
    """
    known = {k: v for k, v in stated.items() if v is not None}
    values = list(known.values())
    if values and any(not math.isclose(v, values[0], rel_tol=MPP_REL_TOL) for v in values):
        shown = ", ".join(f"{k}: {v} µm/px" for k, v in known.items())
        raise ValueError(f"the tile folders state different pixel sizes ({shown}); train on "
                         "tiles cut at one pixel size")  # fmt: skip
    if values and given is not None and not math.isclose(given, values[0], rel_tol=MPP_REL_TOL):
        shown = ", ".join(f"{k}: {v} µm/px" for k, v in known.items())
        raise ValueError(f"the pixel size given ({given} µm/px) contradicts the one the tiles "
                         f"state ({shown}); leave it out to use theirs")  # fmt: skip
    return values[0] if values else given
