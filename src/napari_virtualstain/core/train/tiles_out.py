"""The folder ``extract_tiles`` writes: what it may touch there, and how a run resumes.

A tiles folder carries a marker (``MARKER_NAME``) with the run's plan (slides, ``TileSpec``,
source mpp), its state and how many slides are finished. While a run is in progress its index is
``index.partial.csv``; it is renamed to ``index.csv`` when the last slide is done, so an
``index.csv`` always lists a finished run.

- A new or empty folder: a fresh run.
- This tool's folder with an unfinished run of the same plan: resumed (see ``TilesFolder``).
- This tool's finished folder, an unfinished run of another plan, or an ``index.csv`` of an
  older version: refused unless ``overwrite``; then the tiles and index are deleted first, and
  only when the folder holds nothing else.
- Any other non-empty folder: refused, even with ``overwrite``; nothing in it is ever replaced.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

MARKER_NAME = ".napari-virtualstain-tiles.json"
INDEX_NAME = "index.csv"
PARTIAL_INDEX_NAME = "index.partial.csv"
INDEX_FIELDS = ("file", "slide", "level", "y", "x", "read_px", "mpp", "tissue_fraction")
TOOL = "napari-virtualstain tiles"
_TILE_NAME = re.compile(r"^\.?(?P<name>.+)_L\d+_y\d+_x\d+\.png(\.\w+\.tmp\.png)?$")


class ForeignFolderError(FileExistsError):
    """``out_dir`` holds files this tool did not write; ``overwrite_asked``: the caller asked to
    replace them (the CLI makes that a usage error)."""

    def __init__(self, message: str, overwrite_asked: bool) -> None:
        super().__init__(message)
        self.overwrite_asked = overwrite_asked


@dataclass
class TilesFolder:
    """Where a run starts: ``slides_done`` slides finished, ``rows`` (index rows) kept so far."""

    path: Path
    plan: dict
    slides_done: int = 0
    rows: list[dict] = field(default_factory=list)

    @property
    def resumed(self) -> bool:
        return bool(self.slides_done or self.rows)

    def mark(self, state: str) -> None:
        from ..io.atomic import write_json_atomic

        payload = {"tool": TOOL, "state": state, "slides_done": self.slides_done, **self.plan}
        write_json_atomic(self.path / MARKER_NAME, payload)

    def finish(self) -> None:
        """The run is complete: ``index.partial.csv`` becomes ``index.csv``."""
        (self.path / PARTIAL_INDEX_NAME).replace(self.path / INDEX_NAME)
        self.mark("complete")


def make_plan(slides: Sequence, spec, source_mpp: float | None) -> dict:
    """What a run cuts; a rerun resumes only a run of the same plan."""
    plan = {
        "slides": [str(Path(s.path).resolve()) if s.path else s.name for s in slides],
        "names": [s.name for s in slides],
        "spec": asdict(spec),
        "source_mpp": source_mpp,
    }
    return json.loads(json.dumps(plan))  # as it reads back from the marker


def check_unique_names(slides: Sequence) -> None:
    """Tiles are named after their slide: two slides of one name would overwrite each other."""
    seen: dict[str, object] = {}
    for s in slides:
        if s.name in seen:
            raise ValueError(
                f"two slides are named {s.name!r} ({seen[s.name]} and {s.path or s.name}); "
                "their tiles would overwrite each other. Rename one, or cut them into separate "
                "output folders"
            )
        seen[s.name] = s.path or s.name


def read_marker(folder: Path) -> dict | None:
    """This folder's tiles marker, or None (absent or not ours)."""
    from ..io.ownership import read_marker as read_tool_marker

    return read_tool_marker(folder, MARKER_NAME, TOOL)


def prepare_folder(out_dir: Path, plan: dict, overwrite: bool) -> TilesFolder:
    """Check ``out_dir`` and decide: a fresh run, or the resumption of an interrupted one."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is a file, not a folder; refusing to touch it")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return _fresh(out_dir, plan)
    marker = read_marker(out_dir)
    if marker is None and not (out_dir / INDEX_NAME).is_file():
        raise ForeignFolderError(
            f"{out_dir} is not empty and was not written by virtualstain tiles; refusing to "
            "write into it, even with --overwrite. Choose a new or empty folder",
            overwrite,
        )
    _refuse_foreign(out_dir, marker, overwrite)
    state = _state(out_dir, marker)
    same_plan = marker is not None and {k: marker.get(k) for k in plan} == plan
    if not overwrite:
        if state == "partial" and same_plan:
            return TilesFolder(out_dir, plan, int(marker.get("slides_done", 0)), _rows(out_dir))
        what = (
            "holds an unfinished tiles run of other slides or settings"
            if state == "partial"
            else "already holds a finished tile set"
        )
        raise FileExistsError(
            f"{out_dir} {what}; choose another --out, or use --overwrite to delete those "
            "tiles and start again"
        )
    for entry in list(out_dir.iterdir()):
        entry.unlink()  # only this tool's files are left: _refuse_foreign checked
    return _fresh(out_dir, plan)


def _fresh(out_dir: Path, plan: dict) -> TilesFolder:
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = TilesFolder(out_dir, plan)
    folder.mark("partial")
    return folder


def _state(out_dir: Path, marker: dict | None) -> str:
    if marker is None or marker.get("state") == "complete":
        return "complete"  # an index.csv without a marker: a finished run of an older version
    if not (out_dir / PARTIAL_INDEX_NAME).exists() and (out_dir / INDEX_NAME).exists():
        return "complete"  # stopped between the index's rename and the marker's update
    return "partial"


def _refuse_foreign(out_dir: Path, marker: dict | None, overwrite: bool) -> None:
    """Raise if ``out_dir`` holds anything this tool did not write (it must never touch it)."""
    if marker is not None:
        names = set(marker.get("names", ()))
        ours = {MARKER_NAME, INDEX_NAME, PARTIAL_INDEX_NAME}

        def owned(p: Path) -> bool:
            m = _TILE_NAME.match(p.name)
            return p.name in ours or (m is not None and m["name"] in names)
    else:  # an index.csv of an older version: its own tiles only
        listed = {r["file"] for r in _rows(out_dir, INDEX_NAME)} | {INDEX_NAME}

        def owned(p: Path) -> bool:
            return p.name in listed

    foreign = sorted(p.name for p in out_dir.iterdir() if not (p.is_file() and owned(p)))
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise ForeignFolderError(
            f"{out_dir} holds files virtualstain tiles did not write ({shown}); refusing to "
            "write into it, even with --overwrite. Choose a new or empty folder",
            overwrite,
        )


def _rows(out_dir: Path, name: str = PARTIAL_INDEX_NAME) -> list[dict]:
    """The index rows of whole tiles: a row cut short by an interruption, or whose PNG is gone,
    is dropped (its tile is cut again)."""
    path = out_dir / name
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    whole = []
    for row in rows:
        if any(row.get(k) in (None, "") for k in INDEX_FIELDS if k != "mpp"):
            break
        if not (out_dir / row["file"]).is_file():
            break
        whole.append({k: row[k] for k in INDEX_FIELDS})
    return whole
