"""Training folder layouts: unpaired (CycleGAN) and paired as the BCI dataset.

Unpaired::

    ROOT/trainA/*.png  ROOT/trainB/*.png  ROOT/testA/*.png  ROOT/testB/*.png

Paired (BCI, matched by file name)::

    ROOT/HE/train/*.png  ROOT/HE/test/*.png  ROOT/IHC/train/*.png  ROOT/IHC/test/*.png
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# the file-level split lives with the other splits; kept importable from here
from .split import IMAGE_SUFFIXES, is_test_file, list_images, split_files  # noqa: F401

UNPAIRED_DIRS = ("trainA", "trainB", "testA", "testB")


@dataclass(frozen=True)
class UnpairedSplit:
    """Tile files of an unpaired A/B training set (A = H&E, B = Ki-67 by convention)."""

    train_a: tuple[Path, ...]
    train_b: tuple[Path, ...]
    test_a: tuple[Path, ...]
    test_b: tuple[Path, ...]
    description: str = ""  # where the tiles come from and how they were split (model cards)

    def __post_init__(self) -> None:
        for name in ("train_a", "train_b"):
            if not getattr(self, name):
                raise ValueError(f"unpaired training set has no {name} tiles")


@dataclass(frozen=True)
class PairedSplit:
    """(source, target) tile pairs, e.g. (H&E, IHC) of the BCI dataset."""

    train: tuple[tuple[Path, Path], ...]
    test: tuple[tuple[Path, Path], ...]
    description: str = ""  # where the pairs come from and how they were split (model cards)

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("paired training set has no train pairs")


def load_unpaired_layout(root: str | Path) -> UnpairedSplit:
    """Read ``trainA/ trainB/ testA/ testB/`` under ``root``; test folders may be empty."""
    root = Path(root)
    missing = [d for d in UNPAIRED_DIRS[:2] if not (root / d).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{root}: not an unpaired layout, missing {missing} (expected {list(UNPAIRED_DIRS)})"
        )
    test = {d: list_images(root / d) if (root / d).is_dir() else () for d in UNPAIRED_DIRS[2:]}
    return UnpairedSplit(
        train_a=list_images(root / "trainA"),
        train_b=list_images(root / "trainB"),
        test_a=test["testA"],
        test_b=test["testB"],
        description=f"{root}: split as given by its folders (overlap not checked)",
    )


def unpaired_from_folders(a_dir: str | Path, b_dir: str | Path, test_fraction: float = 0.1):
    """An :class:`UnpairedSplit` from two folders of tiles (e.g. two ``virtualstain tiles`` runs).

    Each folder is split by ``sources.split_folder``: with an ``index.csv`` no held-out tile
    shares a pixel with a training tile (by slide, else spatial blocks and a guard band); a plain
    folder is split by file name. A folder that is itself an unpaired layout root is not
    accepted here; use :func:`load_unpaired_layout` for that.
    """
    from .sources import split_folder

    a, b = split_folder(a_dir, test_fraction), split_folder(b_dir, test_fraction)
    return UnpairedSplit(
        a.train, b.train, a.test, b.test, description=f"A: {a.description}. B: {b.description}"
    )


def _match_by_name(he_dir: Path, ihc_dir: Path) -> tuple[tuple[Path, Path], ...]:
    he = {p.name: p for p in list_images(he_dir)} if he_dir.is_dir() else {}
    ihc = {p.name: p for p in list_images(ihc_dir)} if ihc_dir.is_dir() else {}
    unmatched = sorted(set(he) ^ set(ihc))
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        raise ValueError(
            f"{he_dir} and {ihc_dir}: {len(unmatched)} file(s) have no partner of the same "
            f"name: {shown}"
        )
    return tuple((he[name], ihc[name]) for name in sorted(he))


def load_bci_layout(root: str | Path) -> PairedSplit:
    """Read a BCI-style paired layout (``HE/{train,test}``, ``IHC/{train,test}``)."""
    root = Path(root)
    for sub in ("HE/train", "IHC/train"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(
                f"{root}: not a BCI layout, missing {sub}/ (expected HE/train, HE/test, "
                "IHC/train, IHC/test with files matched by name)"
            )
    return PairedSplit(
        train=_match_by_name(root / "HE" / "train", root / "IHC" / "train"),
        test=_match_by_name(root / "HE" / "test", root / "IHC" / "test"),
        description=_split_note(root),
    )


def _split_note(root: Path) -> str:
    """How a layout was split: ``split.json`` of a ``pairs`` run, else the folders as given."""
    import json

    note = root / "split.json"
    if note.is_file():
        try:
            return f"{root}: {json.loads(note.read_text())['description']}"
        except (ValueError, KeyError, TypeError):
            pass
    return f"{root}: split as given by its folders (overlap not checked)"


def _copy_into(files: Sequence[Path], folder: Path, names: Sequence[str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(files):
        dst = folder / (names[i] if names is not None else Path(src).name)
        if dst.exists():
            raise FileExistsError(f"{dst} exists; refusing to overwrite it")
        shutil.copyfile(src, dst)


def write_unpaired_layout(split: UnpairedSplit, root: str | Path) -> Path:
    """Copy the files of ``split`` into ``root/trainA`` ... ``root/testB``."""
    root = Path(root)
    for folder, files in zip(
        UNPAIRED_DIRS, (split.train_a, split.train_b, split.test_a, split.test_b), strict=True
    ):
        _copy_into(files, root / folder)
    return root


def write_bci_layout(split: PairedSplit, root: str | Path) -> Path:
    """Copy pairs into ``root/HE/{train,test}`` and ``root/IHC/{train,test}``, one shared name.

    Each pair takes its H&E file's name, so the IHC partner is found by name again.
    """
    root = Path(root)
    for part, pairs in (("train", split.train), ("test", split.test)):
        names = [Path(he).name for he, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"{part}: H&E file names are not unique; pairs cannot be matched")
        _copy_into([he for he, _ in pairs], root / "HE" / part, names)
        _copy_into([ihc for _, ihc in pairs], root / "IHC" / part, names)
    return root
