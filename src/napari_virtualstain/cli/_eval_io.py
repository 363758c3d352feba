"""``eval``'s inputs and outputs: readers that refuse bad files naming them, atomic writers.

Inputs are read and checked before ``--out`` is created; every output is written to a
temporary file beside it and renamed into place.
"""

from __future__ import annotations

import contextlib
import csv
import math
from pathlib import Path

import click
import numpy as np

from ._params import OUTPUT_FOLDER

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
RATIO_KEYS = ("name", "roi", "id", "image", "slide")
RATIO_COLUMNS = ("area_ratio", "ratio", "labelling_index", "ki67_ratio")


def _prepare_out(out_dir: Path | None, command: str, inputs: list[Path]) -> Path:
    """Check ``--out`` before any work; it is created only when the results are written."""
    out = Path(out_dir or f"eval-{command}").resolve()
    for p in inputs:
        # never write results over (or into) what was given as input
        if out == Path(p).resolve() or Path(p).resolve() in (out / "metrics.json",):
            raise click.ClickException(f"--out {out} is an input; choose another folder")
    return OUTPUT_FOLDER.convert(out, None, None)


@contextlib.contextmanager
def _atomic_file(out: Path, name: str):
    """A temporary path for ``out/name``, renamed into place when the writer succeeds."""
    from napari_virtualstain.core.io.atomic import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / name) as tmp:
        yield tmp


def _write_json(out: Path, payload: dict) -> Path:
    from napari_virtualstain.core.io.atomic import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None  # JSON has no inf / nan: null (summaries count them in n_inf)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    return write_json_atomic(path, clean(payload))


def _read_rgb(path: Path) -> np.ndarray:
    from napari_virtualstain.core.io import open_slide

    try:
        return np.asarray(open_slide(path).levels[0].compute())
    except Exception as err:
        raise click.ClickException(f"{path}: cannot read as an RGB image ({err})") from err


def _image_items(path: Path, tile_px: int) -> dict[str, np.ndarray]:
    """name -> RGB: each image of a folder, or the level-0 tiles of one slide / OME-Zarr."""
    path = Path(path)
    if path.is_dir() and not (path / "zarr.json").exists() and not (path / ".zgroup").exists():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise click.ClickException(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return {p.stem: _read_rgb(p) for p in files}
    from napari_virtualstain.core.geometry import TileGrid

    img = _read_rgb(path)
    grid = TileGrid(img.shape[:2], tile_px)
    cores = (grid.core(*t) for t in grid.tiles())
    # whole tiles only: metrics over tiles of one size compare like with like
    full = [b for b in cores if b.shape == (tile_px, tile_px)]
    return {f"y{b.y}_x{b.x}": img[b.slices] for b in full} or {path.stem: img}


def _read_labels(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)  # object arrays would need pickle: refused
        else:
            from skimage.io import imread

            arr = imread(path)
    except Exception as err:  # each reader raises its own types for empty or corrupt files
        reason = "holds Python objects (pickle), not numbers" if "allow_pickle" in str(err) else err
        raise click.ClickException(f"{path}: cannot read as a label image ({reason})") from err
    arr = np.asarray(arr)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise click.ClickException(
            f"{path}: expected a 2-D integer label image, found {arr.shape} {arr.dtype}"
        )
    return arr


def _label_items(path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in LABEL_SUFFIXES)
        if not files:
            raise click.ClickException(f"{path}: no label images ({', '.join(LABEL_SUFFIXES)})")
        return {p.stem: _read_labels(p) for p in files}
    return {path.stem: _read_labels(path)}


def _read_ratio_csv(path: Path, column: str | None, key: str | None) -> tuple[list, np.ndarray]:
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise click.ClickException(
            f"{path}: not UTF-8 text (byte {err.start}); save the CSV as UTF-8"
        ) from err
    except csv.Error as err:
        raise click.ClickException(f"{path}: not a readable CSV ({err})") from err
    if not rows:
        raise click.ClickException(f"{path}: no rows")
    cols = list(reader.fieldnames or [])
    for line, row in enumerate(rows, start=2):
        if None in row.values() or None in row:
            raise click.ClickException(
                f"{path}: row {line} has {len([v for v in row.values() if v is not None])} "
                f"fields, the header has {len(cols)}"
            )
    col = column or next((c for c in RATIO_COLUMNS if c in cols), None)
    if col not in cols:
        raise click.ClickException(
            f"{path}: no ratio column (looked for {column or ', '.join(RATIO_COLUMNS)}; "
            f"found {', '.join(cols)}); pass --column"
        )
    k = key or next((c for c in RATIO_KEYS if c in cols), None)
    try:
        values = np.asarray([float(r[col]) for r in rows])
    except ValueError as err:
        raise click.ClickException(f"{path}: column {col!r} is not numeric ({err})") from err
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0) | (values > 1))
    if bad.size:
        raise click.ClickException(
            f"{path}: row {bad[0] + 2} has {col} = {rows[bad[0]][col]!r}; ratios are fractions "
            "in [0, 1]"
        )
    keys = [r[k] for r in rows] if k in cols else list(range(len(rows)))
    seen: dict = {}
    for line, name in enumerate(keys, start=2):
        if name in seen:
            raise click.ClickException(
                f"{path}: key {name!r} appears twice (rows {seen[name]} and {line}); pairs "
                "would be ambiguous"
            )
        seen[name] = line
    return keys, values
