"""Training tiles from slides: a tile grid at a target pixel size, white cleaning, PNG + index CSV.

The seed-000 default is 288 px tiles with 144 px overlap at 20x (0.5 µm/px). Tiles are read from
the pyramid level closest to (and not coarser than) the target pixel size and resampled with
anti-aliasing, so slides scanned at 0.227 µm/px and 0.5 µm/px give tiles of the same scale.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..progress import Progress, ProgressGenerator, blocking
from .tiles_out import INDEX_FIELDS, INDEX_NAME, PARTIAL_INDEX_NAME


@dataclass(frozen=True)
class TileSpec:
    """How to cut training tiles.

    Parameters
    ----------
    tile_px : int
        Tile side in output pixels.
    overlap_px : int
        Overlap between neighbouring tiles in output pixels (stride = tile_px - overlap_px).
    mpp : float or None
        Output pixel size in µm/px; None keeps level 0's resolution.
    min_tissue : float
        White cleaning: keep a tile only if at least this fraction of it is tissue.
    white_level : int
        A pixel whose mean intensity is at least this and whose chroma is low is background.
    """

    tile_px: int = 288
    overlap_px: int = 144
    mpp: float | None = 0.5
    min_tissue: float = 0.5
    white_level: int = 220

    def __post_init__(self) -> None:
        if self.tile_px < 8:
            raise ValueError(f"tile_px must be >= 8, got {self.tile_px}")
        if not 0 <= self.overlap_px < self.tile_px:
            raise ValueError(
                f"overlap_px must be in [0, tile_px={self.tile_px}), got {self.overlap_px}"
            )
        if self.mpp is not None and not (math.isfinite(self.mpp) and self.mpp > 0):
            raise ValueError(f"mpp must be a finite number > 0 µm/px or None, got {self.mpp}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ValueError(f"min_tissue must be a fraction in [0, 1], got {self.min_tissue}")
        if not 0 < self.white_level <= 255:
            raise ValueError(f"white_level must be in (0, 255], got {self.white_level}")

    @property
    def stride_px(self) -> int:
        """Step between tile origins in output pixels."""
        return self.tile_px - self.overlap_px


@dataclass(frozen=True)
class TileRecord:
    """One row of the index CSV; y, x and read_px are in pixels of ``level``."""

    file: str
    slide: str
    level: int
    y: int
    x: int
    read_px: int
    mpp: float | None
    tissue_fraction: float


def tissue_fraction(rgb: np.ndarray, white_level: int = 220, max_chroma: int = 25) -> float:
    """Fraction of pixels that are tissue rather than bright, grey glass.

    A background pixel is bright (mean >= ``white_level``) and nearly grey (max - min channel <
    ``max_chroma``); pale eosin is bright too but keeps its pink chroma, so it stays tissue.
    Pure black (scanner padding) counts as background as well.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, found shape {rgb.shape}")
    if rgb.size == 0:
        return 0.0
    as_int = rgb.astype(np.int16)
    mean = as_int.mean(axis=-1)
    chroma = as_int.max(axis=-1) - as_int.min(axis=-1)
    background = ((mean >= white_level) & (chroma < max_chroma)) | (as_int.max(axis=-1) < 10)
    return float(1.0 - background.mean())


def grid_starts(length_px: int, tile_px: int, stride_px: int) -> list[int]:
    """Tile origins along one axis; the last tile is shifted back so the edge is covered."""
    if length_px <= tile_px:
        return [0]
    starts = list(range(0, length_px - tile_px + 1, stride_px))
    if starts[-1] + tile_px < length_px:
        starts.append(length_px - tile_px)
    return starts


def resolve_level(slide, spec: TileSpec, source_mpp: float | None) -> tuple[int, float]:
    """Pick the level to read and the scale factor (level pixels per output pixel)."""
    if spec.mpp is None:
        return 0, 1.0
    mpp0 = source_mpp if source_mpp is not None else slide.mpp
    if mpp0 is None:
        raise ValueError(
            f"{slide.path}: the slide has no pixel size (mpp) and tiles at {spec.mpp} µm/px were "
            "asked for; pass source_mpp or mpp=None (CLI: --source-mpp, or --mpp 0 for native)"
        )
    if source_mpp is None:
        level = slide.best_level_for_mpp(spec.mpp)
        level_mpp = slide.level_mpp(level)
    else:  # the file's own mpp is wrong or missing: trust the user's and read level 0
        level, level_mpp = 0, source_mpp
    return level, spec.mpp / level_mpp


def _resample(region: np.ndarray, tile_px: int) -> np.ndarray:
    if region.shape[:2] == (tile_px, tile_px):
        return region
    from skimage.transform import resize

    out = resize(region, (tile_px, tile_px), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def read_tile(
    slide, level: int, scale: float, ty: int, tx: int, tile_px: int
) -> tuple[int, int, np.ndarray]:
    """Read the output-grid tile at (ty, tx); returns its level origin (y, x) and the tile."""
    y, x = int(round(ty * scale)), int(round(tx * scale))
    read_px = int(round(tile_px * scale))
    region = np.asarray(slide.read_region(level, y, x, read_px, read_px))
    return y, x, _resample(region, tile_px)


def output_shape(slide, level: int, scale: float) -> tuple[int, int]:
    """(height, width) of ``level`` in output pixels."""
    height, width = slide.levels[level].shape[:2]
    return int(round(height / scale)), int(round(width / scale))


def grid_origins(
    slide, spec: TileSpec, source_mpp: float | None = None
) -> tuple[int, float, list[tuple[int, int]]]:
    """The level read, its scale, and every tile origin (ty, tx) in output pixels, in the order
    :func:`iter_slide_tiles` visits them."""
    level, scale = resolve_level(slide, spec, source_mpp)
    out_h, out_w = output_shape(slide, level, scale)
    ys = grid_starts(out_h, spec.tile_px, spec.stride_px)
    xs = grid_starts(out_w, spec.tile_px, spec.stride_px)
    return level, scale, [(ty, tx) for ty in ys for tx in xs]


def tile_names(slide, spec: TileSpec, source_mpp: float | None = None) -> list[str]:
    """The PNG name of every grid position of ``slide``, in visiting order (nothing is read)."""
    level, scale, origins = grid_origins(slide, spec, source_mpp)
    return [
        _tile_name(slide, level, int(round(ty * scale)), int(round(tx * scale)))
        for ty, tx in origins
    ]


def _tile_name(slide, level: int, y: int, x: int) -> str:
    return f"{slide.name}_L{level}_y{y}_x{x}.png"


def iter_slide_tiles(
    slide, spec: TileSpec, source_mpp: float | None = None, skip: int = 0
) -> Iterator[tuple[TileRecord, np.ndarray]]:
    """Yield ``(record, tile)`` for every grid position of ``slide`` (white tiles included),
    after the first ``skip`` positions.

    ``record.file`` is the PNG name the tile would get; ``tissue_fraction`` is filled in.
    """
    level, scale, origins = grid_origins(slide, spec, source_mpp)
    read_px = int(round(spec.tile_px * scale))
    for ty, tx in origins[skip:]:
        y, x, tile = read_tile(slide, level, scale, ty, tx, spec.tile_px)
        record = TileRecord(
            file=_tile_name(slide, level, y, x),
            slide=str(slide.path),
            level=level,
            y=y,
            x=x,
            read_px=read_px,
            mpp=spec.mpp if spec.mpp is not None else slide.level_mpp(0),
            tissue_fraction=round(tissue_fraction(tile, spec.white_level), 4),
        )
        yield record, tile


def count_grid_tiles(slide, spec: TileSpec, source_mpp: float | None = None) -> int:
    """Number of grid positions ``iter_slide_tiles`` visits (before white cleaning)."""
    return len(grid_origins(slide, spec, source_mpp)[2])


def save_png(path: Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array as PNG."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    image.save(path, format="PNG")  # whatever the suffix (a temporary name, say)


def load_png(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, with a clear error for anything else."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tile not found: {path}")
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))  # a writable copy (torch warns on read-only)


def iter_extract_tiles(
    slides: Sequence,
    out_dir: str | Path,
    spec: TileSpec = TileSpec(),
    source_mpp: float | None = None,
    overwrite: bool = False,
) -> ProgressGenerator[list[TileRecord]]:
    """Cut tiles from ``slides`` (paths or opened ``Slide`` objects) into ``out_dir``.

    Long work as a generator: yields a :class:`~napari_virtualstain.core.progress.Progress`
    after each grid position (``details["kept"]``: tiles kept so far, ``details["resumed"]``:
    those kept by an interrupted run), so a caller can show progress and cancel by closing the
    generator; returns the kept tiles' records. Rows go to ``index.partial.csv`` one by one,
    renamed ``index.csv`` at the end; a cancelled run is resumed by the same call (see
    :mod:`.tiles_out` for what is refused). Everything is checked before anything is written.
    """
    from ..io import open_slide
    from .tiles_out import check_unique_names, make_plan, prepare_folder

    opened = [open_slide(s) if isinstance(s, str | Path) else s for s in slides]
    check_unique_names(opened)
    total = sum(count_grid_tiles(s, spec, source_mpp) for s in opened)
    out_dir = Path(out_dir)
    folder = prepare_folder(out_dir, make_plan(opened, spec, source_mpp), overwrite)
    kept = [_record(row) for row in folder.rows]
    resumed = len(kept)
    done = sum(count_grid_tiles(s, spec, source_mpp) for s in opened[: folder.slides_done])
    index = out_dir / PARTIAL_INDEX_NAME
    _write_rows(index, folder.rows)  # whole rows only: drops one cut short by an interruption
    with open(index, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=INDEX_FIELDS)
        for i, slide in enumerate(opened[folder.slides_done :], start=folder.slides_done):
            skip = _resume_position(slide, spec, source_mpp, kept) if i == folder.slides_done else 0
            done += skip
            for record, tile in iter_slide_tiles(slide, spec, source_mpp, skip):
                done += 1
                if record.tissue_fraction >= spec.min_tissue:
                    _save_png_atomic(out_dir / record.file, tile)
                    writer.writerow(asdict(record))
                    handle.flush()
                    kept.append(record)
                yield Progress(
                    done, total, f"{len(kept)} kept", {"kept": len(kept), "resumed": resumed}
                )
            folder.slides_done = i + 1
            folder.mark("partial")
    folder.finish()
    return kept


def _resume_position(slide, spec: TileSpec, source_mpp, kept: list[TileRecord]) -> int:
    """Grid positions of ``slide`` already done: up to its last kept tile, in visiting order."""
    mine = {r.file for r in kept}
    names = tile_names(slide, spec, source_mpp)
    done = [i for i, name in enumerate(names) if name in mine]
    return done[-1] + 1 if done else 0


def _save_png_atomic(path: Path, rgb: np.ndarray) -> None:
    """A whole PNG or none: a tile interrupted mid-write never replaces a finished one."""
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        save_png(tmp, rgb)


def _write_rows(index: Path, rows: list[dict]) -> None:
    from ..io.atomic import atomic_open

    with atomic_open(index, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=INDEX_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


#: Blocking twin of :func:`iter_extract_tiles` (``progress=`` gets each report); returns the kept
#: tiles' records.
extract_tiles = blocking(iter_extract_tiles)


def read_index(path: str | Path) -> list[TileRecord]:
    """Read an index CSV written by :func:`extract_tiles`."""
    path = Path(path)
    if path.is_dir():
        if not (path / INDEX_NAME).exists() and (path / PARTIAL_INDEX_NAME).exists():
            raise FileNotFoundError(
                f"{path} holds an unfinished tiles run ({PARTIAL_INDEX_NAME}); rerun the same "
                "command to finish it, or read that file by name"
            )
        path = path / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"tile index not found: {path}")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(INDEX_FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a tile index, missing columns {sorted(missing)}")
        return [_record(row) for row in reader]


def _record(row: dict) -> TileRecord:
    return TileRecord(
        file=row["file"],
        slide=row["slide"],
        level=int(row["level"]),
        y=int(row["y"]),
        x=int(row["x"]),
        read_px=int(row["read_px"]),
        mpp=float(row["mpp"]) if row["mpp"] not in ("", "None") else None,
        tissue_fraction=float(row["tissue_fraction"]),
    )
