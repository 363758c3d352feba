"""Held-out splits that share no pixels with training: by slide, else by spatial blocks.

Overlapping tiles (the ``tiles`` default is 50 % overlap) share pixels with their neighbours, so a
split by file name puts the neighbours of every held-out tile into training and the held-out
scores measure memory, not generalisation. :func:`plan_split` therefore holds out

- whole slides, when the tiles come from several slides (different slides share no pixels);
- else square blocks of one slide (``block_px`` level pixels, by the tile origin), and drops
  from training every tile whose footprint intersects a held-out tile's footprint (the guard
  band). No training tile then shares a pixel with a held-out tile.

Slides and blocks are taken in the order of a hash of their name (deterministic, independent of
file order and machine) and added while that brings the held-out count closer to
``test_fraction`` of the tiles; at least one is held out and at least one is kept for training.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

#: Default block edge in tile footprints; blocks are halved (down to one footprint) until there
#: are at least MIN_BLOCKS of them and they hold on average no more tiles than the target.
BLOCK_TILES = 4
MIN_BLOCKS = 4


@dataclass(frozen=True)
class Footprint:
    """The square a tile covers: ``size`` pixels from (y, x) at ``level`` of ``slide``."""

    slide: str
    level: int
    y: int
    x: int
    size: int

    def intersects(self, other: Footprint) -> bool:
        """True when the two squares share a pixel (touching edges do not)."""
        return (
            self.slide == other.slide
            and self.level == other.level
            and self.y < other.y + other.size
            and other.y < self.y + self.size
            and self.x < other.x + other.size
            and other.x < self.x + self.size
        )


@dataclass(frozen=True)
class SplitPlan:
    """``parts[i]`` is "train", "test" or "guard" (dropped: overlaps a held-out tile).

    ``method`` is "slides", "blocks" or "none" (no hold-out asked for or possible).
    """

    parts: tuple[str, ...]
    method: str
    held_out: tuple[str, ...] = ()
    block_px: int | None = None

    def count(self, part: str) -> int:
        return self.parts.count(part)

    def describe(self) -> str:
        """One line for a model card: the method and the counts."""
        counts = (f"{self.count('train')} train / {self.count('test')} held-out tiles"
                  f"{self._guard_note()}")  # fmt: skip
        if self.method == "slides":
            return f"{counts}; held out by slide ({', '.join(self.held_out)})"
        if self.method == "blocks":
            return (
                f"{counts}; held out by spatial blocks of {self.block_px} px of one slide, no "
                "training tile overlaps a held-out tile"
            )
        return f"{counts}; nothing held out"

    def _guard_note(self) -> str:
        guard = self.count("guard")
        return f" ({guard} overlapping a held-out tile dropped)" if guard else ""


def stable_hash(text: str) -> int:
    """A hash that is the same on every machine and run (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def pick_held_out(counts: dict[str, int], target: float) -> set[str]:
    """Keys, in hash order, whose summed counts come closest to ``target``; at least one is
    taken and at least one is left."""
    chosen: set[str] = set()
    total = 0
    for key in sorted(counts, key=lambda k: (stable_hash(k), k)):
        if len(chosen) == len(counts) - 1:
            break
        if not chosen or abs(total + counts[key] - target) < abs(total - target):
            chosen.add(key)
            total += counts[key]
    return chosen


def plan_split(
    footprints: Sequence[Footprint], test_fraction: float, block_px: int | None = None
) -> SplitPlan:
    """Assign each footprint to "train", "test" or "guard"; see the module docstring.

    Raises
    ------
    ValueError
        ``test_fraction`` outside [0, 1), one slide read at several levels, or no training tile
        left once the guard band is dropped.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(footprints)
    if test_fraction == 0 or n < 2:
        return SplitPlan(("train",) * n, "none")
    target = test_fraction * n
    slides = Counter(PurePath(f.slide).name for f in footprints)
    if len(slides) >= 2:
        held = pick_held_out(dict(slides), target)
        parts = tuple("test" if PurePath(f.slide).name in held else "train" for f in footprints)
        return SplitPlan(parts, "slides", tuple(sorted(held)))
    return _plan_blocks(footprints, target, block_px)


def _plan_blocks(footprints: Sequence[Footprint], target: float, block_px: int | None):
    levels = {f.level for f in footprints}
    if len(levels) > 1:
        raise ValueError(
            f"tiles of one slide come from levels {sorted(levels)}: their footprints cannot be "
            "compared, so no overlap-free hold-out can be made (cut them at one pixel size)"
        )
    size = max(f.size for f in footprints)
    block = int(block_px or BLOCK_TILES * size)
    while block > size and not _fine_enough(footprints, block, target):
        block = max(size, block // 2)
    keys = [_block(f, block) for f in footprints]
    if len(set(keys)) < 2:
        return SplitPlan(("train",) * len(footprints), "none")
    slide = PurePath(footprints[0].slide).name
    labels = [f"{slide}:{by}:{bx}" for by, bx in keys]
    held = pick_held_out(dict(Counter(labels)), target)
    parts = ["test" if label in held else "train" for label in labels]
    for i in _guarded(footprints, parts, size):
        parts[i] = "guard"
    if "train" not in parts:
        raise ValueError(
            f"{len(footprints)} tiles: every training tile overlaps a held-out tile, so no "
            "overlap-free hold-out is possible; cut more (or non-overlapping) tiles, or hold "
            "nothing out (test fraction 0)"
        )
    return SplitPlan(tuple(parts), "blocks", tuple(sorted(held)), block)


def _fine_enough(footprints: Sequence[Footprint], block_px: int, target: float) -> bool:
    """At least ``MIN_BLOCKS`` blocks, holding on average no more tiles than the target (so the
    held-out count can come near it); larger blocks lose fewer tiles to the guard band."""
    blocks = len({_block(f, block_px) for f in footprints})
    return blocks >= MIN_BLOCKS and len(footprints) / blocks <= target


def _block(f: Footprint, block_px: int) -> tuple[int, int]:
    return f.y // block_px, f.x // block_px


def _guarded(footprints: Sequence[Footprint], parts: Sequence[str], size: int) -> list[int]:
    """Indices of training tiles that intersect a held-out tile.

    Held-out tiles are bucketed on a grid of the largest footprint, so a training tile only
    needs the 3 x 3 buckets around its own.
    """
    buckets: dict[tuple[int, int], list[Footprint]] = defaultdict(list)
    for f, part in zip(footprints, parts, strict=True):
        if part == "test":
            buckets[(f.y // size, f.x // size)].append(f)
    out = []
    for i, (f, part) in enumerate(zip(footprints, parts, strict=True)):
        if part != "train":
            continue
        cy, cx = f.y // size, f.x // size
        near = (t for dy in (-1, 0, 1) for dx in (-1, 0, 1) for t in buckets[(cy + dy, cx + dx)])
        if any(f.intersects(t) for t in near):
            out.append(i)
    return out


# -- file-level split (folders without an index.csv) ------------------------------------


def list_images(folder: str | Path) -> tuple[Path, ...]:
    """Image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"tile folder not found: {folder}")
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))


def is_test_file(name: str, test_fraction: float) -> bool:
    """Deterministic hold-out by a hash of the file name (stable across runs and machines)."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < test_fraction


def split_files(
    files: Sequence[Path], test_fraction: float
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """Split files into (train, test) by :func:`is_test_file`; keeps at least one train file."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    test = tuple(f for f in files if is_test_file(Path(f).name, test_fraction))
    train = tuple(f for f in files if f not in test)
    if not train and test:
        train, test = test[:1], test[1:]
    return train, test
