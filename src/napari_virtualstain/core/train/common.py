"""Pieces both trainers share: tile batches, the image pool, init, LR decay, state files, metrics.

torch is imported inside functions (and by the trainer modules, which are only imported when
training), so ``import napari_virtualstain.core.train`` stays light.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..progress import Progress
from .tiles import load_png

STATE_NAME = "state.pt"


@dataclass(frozen=True)
class StepProgress(Progress):
    """A trainer's :class:`Progress`, whose ``done`` counts optimisation steps."""

    @property
    def step(self) -> int:
        return self.done


@dataclass(frozen=True)
class TrainProgress(StepProgress):
    """One progress report of a trainer's ``fit`` generator: a :class:`Progress` of the epoch.

    ``done`` / ``total`` are the step and the steps per epoch, so any ``Progress`` consumer (the
    CLI's tqdm bar, the widgets' runner) shows it. ``phase`` is "train" after each step, "epoch"
    after each epoch's evaluation and checkpoint (``metrics`` then holds that epoch's held-out
    metrics). Build it with :meth:`at`, which writes the message.
    """

    phase: str = "train"
    epoch: int = 0
    epochs: int = 0
    losses: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def at(
        cls,
        phase: str,
        epoch: int,
        epochs: int,
        step: int,
        steps_per_epoch: int,
        losses: Mapping[str, float] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> TrainProgress:
        losses, metrics = dict(losses or {}), dict(metrics or {})
        if phase == "epoch":  # its numbers are in ``metrics``; a bar shows only this line
            message = f"epoch {epoch + 1}/{epochs} evaluated"
        else:
            shown = " ".join(f"{k}={v:.3f}" for k, v in losses.items())
            message = f"epoch {epoch + 1}/{epochs} {shown}".rstrip()
        return cls(step, steps_per_epoch, message, {}, phase, epoch, epochs, losses, metrics)

    @property
    def steps_per_epoch(self) -> int:
        return self.total


def crop_and_augment(
    tiles: Sequence[np.ndarray], crop_px: int, rng: np.random.Generator | None, what: str = ""
) -> list[np.ndarray]:
    """The same crop, flip and 90° turn for every tile (a pair stays aligned).

    ``rng`` None gives the centre crop without augmentation.
    """
    height, width = tiles[0].shape[:2]
    if height < crop_px or width < crop_px:
        raise ValueError(f"{what}: tile is {height}x{width} px, smaller than the {crop_px} px crop")
    if any(t.shape[:2] != (height, width) for t in tiles):
        raise ValueError(f"{what}: paired tiles differ in size {[t.shape for t in tiles]}")
    if rng is None:
        y, x, flip, turns = (height - crop_px) // 2, (width - crop_px) // 2, False, 0
    else:
        y = int(rng.integers(0, height - crop_px + 1))
        x = int(rng.integers(0, width - crop_px + 1))
        flip, turns = bool(rng.random() < 0.5), int(rng.integers(0, 4))
    out = []
    for tile in tiles:
        tile = tile[y : y + crop_px, x : x + crop_px]
        tile = np.rot90(tile[:, ::-1] if flip else tile, k=turns)
        out.append(np.ascontiguousarray(tile))
    return out


class TileSource:
    """Tiles from files, cropped and augmented (flips, 90° turns) with the caller's RNG.

    Files are decoded on demand: a PNG decode costs milliseconds, a training step a second.
    """

    def __init__(self, files: Sequence[Path], crop_px: int, augment: bool = True) -> None:
        if not files:
            raise ValueError("no tiles given")
        self.files = tuple(Path(f) for f in files)
        self.crop_px = int(crop_px)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Tile ``index`` as (crop_px, crop_px, 3) uint8: random crop/augment, or centre crop."""
        tile = load_png(self.files[index])
        return crop_and_augment([tile], self.crop_px, rng if self.augment else None,
                                str(self.files[index]))[0]  # fmt: skip

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None) -> np.ndarray:
        """(N, crop_px, crop_px, 3) uint8."""
        return np.stack([self.read(int(i), rng) for i in indices])


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al.): the discriminator sees a mix
    of the newest fakes and older ones, which damps oscillation.

    With probability 1/2 a query returns a stored image (and stores the new one in its place).
    Randomness comes from the trainer's numpy RNG so a resumed run draws the same.
    """

    def __init__(self, size: int = 50) -> None:
        self.size = int(size)
        self.images: list = []

    def query(self, images, rng: np.random.Generator):
        import torch

        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif rng.random() > 0.5:
                i = int(rng.integers(0, self.size))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        import torch

        stacked = torch.cat(self.images, 0).cpu() if self.images else torch.empty(0)
        return {"size": self.size, "images": stacked}

    def load_state_dict(self, state: dict, device=None) -> None:
        self.size = int(state["size"])
        images = state["images"]
        self.images = [im.unsqueeze(0).to(device) for im in images] if images.numel() else []


def step_decay(optimizer, every_epochs: int = 2, rate: float = 0.9):
    """Exponential decay: the learning rate is multiplied by ``rate`` every ``every_epochs``."""
    import torch

    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every_epochs, gamma=rate)


def rng_state(rng: np.random.Generator) -> dict:
    """Everything needed to resume random draws exactly (numpy and torch CPU/CUDA)."""
    import torch

    state = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(rng: np.random.Generator, state: dict) -> None:
    import torch

    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: str | Path, state: dict) -> Path:
    """Write a resume state (tensors, numbers, strings only) atomically."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_state(path: str | Path) -> dict:
    """Read a resume state safely (``weights_only=True``: no code runs from the file)."""
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path} (expected a run's {STATE_NAME})")
    return torch.load(path, map_location="cpu", weights_only=True)


class MetricsLog:
    """Per-epoch metrics, written as CSV and plotted as one panel per metric."""

    def __init__(self, rows: Sequence[dict] = ()) -> None:
        self.rows: list[dict] = [dict(r) for r in rows]

    def append(self, row: dict) -> None:
        self.rows.append(dict(row))

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def plot(self, path: str | Path, keys: Sequence[str], title: str = "") -> Path:
        """One small panel per metric over epochs (matplotlib's Agg backend: no display)."""
        from matplotlib.figure import Figure

        keys = [k for k in keys if any(k in r for r in self.rows)]
        fig = Figure(figsize=(3.2 * max(len(keys), 1), 3.0), layout="constrained")
        axes = fig.subplots(1, max(len(keys), 1), squeeze=False)[0]
        for ax, key in zip(axes, keys, strict=False):
            pts = [(r["epoch"], r[key]) for r in self.rows if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.savefig(path, dpi=100)
        return Path(path)
