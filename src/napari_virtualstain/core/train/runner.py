"""The epoch loop both trainers share: progress, evaluation, checkpoints, exact resume.

A subclass provides the networks (``modules``, ``optimizers``, ``pools``), the batch order of an
epoch, one ``train_step`` and ``evaluate``. This class runs epochs as a generator of
:class:`TrainProgress` (a ``core.progress.Progress``), so the CLI's tqdm bar shows it, a widget
runs it in a worker and cancels by closing it; closing it between two steps saves the resume
state there. Everything that influences the next step (weights, Adam moments, LR schedule,
gradient scalers, image pools, numpy and torch RNG, epoch order and position) is in the resume
state, so a resumed run takes the same next step as an uninterrupted one. A NaN or infinite
loss or weight stops the run (:class:`TrainingDiverged`) before anything of it is saved.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from ..checks import check_fields
from .common import (
    STATE_NAME,
    MetricsLog,
    TrainProgress,
    load_state,
    restore_rng,
    rng_state,
    save_state,
    step_decay,
)
from .tiles import load_png

# Config fields that may change when a run is resumed (more epochs, another evaluation size).
RESUMABLE_CHANGES = ("epochs", "max_eval_tiles")
PRECISIONS = ("fp32", "bf16", "fp16")
# The 70 x 70 PatchGAN halves a tile 3 times and then needs >= 3 px for its 4 x 4 stride-1
# convolutions (and instance norm more than 1 px): smaller crops fail inside the network.
MIN_TILE_PX = 24


class TrainingDiverged(FloatingPointError):
    """A loss or a weight became NaN or infinite; nothing of it was saved."""


def check_finite(config) -> None:
    """Every float field (and tuple of floats) of ``config`` must be finite: an infinite loss
    weight or learning rate makes NaN weights, not a usable model."""
    for f in fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{f.name} must be a finite number, got {value}")


def check_tile_px(tile_px: int, multiple: int) -> None:
    if tile_px < MIN_TILE_PX or tile_px % multiple:
        raise ValueError(
            f"tile_px must be >= {MIN_TILE_PX} and a multiple of {multiple} (the networks' "
            f"stride-2 stages), got {tile_px}"
        )


def check_tile_sizes(files, min_px: int, what: str) -> None:
    """Raise ``ValueError`` naming the first file smaller than ``min_px`` on a side (only the
    image headers are read)."""
    from PIL import Image

    for path in files:
        with Image.open(path) as image:
            width, height = image.size
        if min(width, height) < min_px:
            raise ValueError(
                f"{path}: tile is {height}x{width} px, smaller than the {min_px} px {what}"
            )


def check_gan_config(config) -> None:
    """The checks both GAN trainers' configs share: finite numbers, network widths, batch and
    schedule sizes, learning rate, Adam's beta1 and decay, precision and the optional fixed epoch
    length."""
    check_finite(config)
    counts = ("ngf", "ndf", "batch_size", "epochs", "decay_every_epochs", "max_eval_tiles")
    check_fields(config, counts, ">= 1")
    check_fields(config, ("lr", "decay_rate"), "> 0")
    if not 0.0 <= config.beta1 < 1.0:
        raise ValueError(f"beta1 must be in [0, 1), got {config.beta1}")
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {config.precision!r}")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1 or None, got {config.steps_per_epoch}")


class Trainer:
    """Base class; see the module docstring. ``config`` must be a frozen dataclass with
    ``seed``, ``epochs``, ``steps_per_epoch``, ``batch_size``, ``lr``, ``beta1``, ``precision``,
    ``decay_every_epochs``, ``decay_rate``, ``name``, ``tile_px`` and ``mpp`` fields."""

    metric_keys: tuple[str, ...] = ()
    best_key: str = ""
    best_mode: str = "max"
    size_multiple: int = 8

    def __init__(self, config, run_dir, device=None) -> None:
        from ..models import choose_device

        self.config = config
        self.run_dir = Path(run_dir)
        self.device = choose_device(device) if isinstance(device, str | None) else device
        self.rng = np.random.default_rng(config.seed)
        self.epoch, self.step, self.global_step = 0, 0, 0
        self.order: np.ndarray | None = None
        self.log = MetricsLog()
        self.best: float | None = None
        self.loss_sums: dict[str, float] = {}

    # -- set-up helpers for subclasses ------------------------------------------------------
    def setup_optimizers(self, g_params, d_params) -> None:
        """Adam (``config.lr``, ``config.beta1``) for the generator and the discriminator
        parameters, their LR decay and their gradient scalers."""
        import torch

        c = self.config
        betas = (c.beta1, 0.999)
        self.opt_g = torch.optim.Adam(g_params, lr=c.lr, betas=betas)
        self.opt_d = torch.optim.Adam(d_params, lr=c.lr, betas=betas)
        self.schedulers = [
            step_decay(o, c.decay_every_epochs, c.decay_rate) for o in (self.opt_g, self.opt_d)
        ]
        use_scaler = c.precision == "fp16" and self.device.type == "cuda"
        self.scalers = {
            key: torch.amp.GradScaler(self.device.type, enabled=use_scaler) for key in ("g", "d")
        }

    def autocast(self):
        """Autocast context for ``config.precision`` (a no-op in fp32)."""
        import torch

        from ..models.device import autocast_dtype

        dtype = autocast_dtype(self.config.precision, self.device)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def backward_step(self, loss, optimizer, scaler_key: str) -> None:
        scaler = self.scalers[scaler_key]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    @staticmethod
    def set_requires_grad(nets, flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad_(flag)

    def cycled_permutation(self, size: int, n: int) -> np.ndarray:
        """``n`` indices into ``size`` items: fresh permutations back to back, cut at ``n``."""
        reps = -(-n // size)
        return np.concatenate([self.rng.permutation(size) for _ in range(reps)])[:n]

    def eval_tile(self, path) -> np.ndarray:
        """A held-out tile, centre-cropped to a multiple of the network's total stride."""
        tile = load_png(path)
        m = self.size_multiple
        h, w = (tile.shape[0] // m) * m, (tile.shape[1] // m) * m
        y, x = (tile.shape[0] - h) // 2, (tile.shape[1] - w) // 2
        return np.ascontiguousarray(tile[y : y + h, x : x + w])

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> Iterator[TrainProgress]:
        """Train until ``config.epochs``; yields after every step and every epoch."""
        epochs = self.config.epochs
        while self.epoch < epochs:
            n_steps = self.steps_per_epoch()
            if self.order is None:
                self.order = self.epoch_order()
            while self.step < n_steps:
                losses = self.train_step(*self.step_batches(self.order, self.step))
                self.check_losses(losses)
                for key, value in losses.items():
                    self.loss_sums[key] = self.loss_sums.get(key, 0.0) + value
                self.step += 1
                self.global_step += 1
                try:
                    yield TrainProgress.at("train", self.epoch, epochs, self.step, n_steps, losses)
                except GeneratorExit:  # cancelled between two steps: a consistent state
                    self.save_if_finite()
                    raise
            metrics = self.end_epoch()
            yield TrainProgress.at("epoch", self.epoch - 1, epochs, n_steps, n_steps, {}, metrics)

    def check_losses(self, losses: dict[str, float]) -> None:
        """Raise :class:`TrainingDiverged` naming the step and the non-finite losses."""
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            shown = ", ".join(f"{k}={v}" for k, v in bad.items())
            raise TrainingDiverged(
                f"training diverged at epoch {self.epoch + 1}, step {self.step + 1} (step "
                f"{self.global_step + 1} of the run): loss {shown}. {self.last_saved()} Lower "
                "the learning rate or the loss weights, or train in fp32"
            )

    def non_finite_weight(self) -> str | None:
        """The first module parameter or buffer holding NaN or inf, as "module.name"."""
        import torch

        for key, module in self.modules().items():
            for name, tensor in module.state_dict().items():
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    return f"{key}.{name}"
        return None

    def last_saved(self) -> str:
        state = self.run_dir / "last" / STATE_NAME
        if not state.is_file():
            return "No checkpoint was written."
        saved = load_state(state)
        return (f"The last finite checkpoint is {self.run_dir / 'last'} (epoch "
                f"{int(saved['epoch'])}, step {int(saved['step'])}); nothing later was saved.")  # fmt: skip

    def save_if_finite(self) -> Path | None:
        """Write the resume state unless a weight is NaN or inf."""
        return None if self.non_finite_weight() else self.save()

    def end_epoch(self) -> dict[str, float]:
        """Decay the LR, evaluate, log and write checkpoints; returns the epoch's metrics."""
        n_steps = max(self.step, 1)
        row = {"epoch": self.epoch + 1, "lr": self.schedulers[0].get_last_lr()[0]}
        row.update({f"loss_{k}": v / n_steps for k, v in self.loss_sums.items()})
        for scheduler in self.schedulers:
            scheduler.step()
        self.set_train(False)
        metrics = self.evaluate()
        self.set_train(True)
        row.update(metrics)
        self.log.append(row)
        self.epoch, self.step, self.order, self.loss_sums = self.epoch + 1, 0, None, {}
        self.write_checkpoints(metrics)
        return row

    def set_train(self, flag: bool) -> None:
        for module in self.modules().values():
            module.train(flag)

    def is_better(self, value: float) -> bool:
        if self.best is None or not np.isfinite(self.best):
            return bool(np.isfinite(value))
        return value > self.best if self.best_mode == "max" else value < self.best

    def write_checkpoints(self, metrics: dict[str, float]) -> None:
        bad = self.non_finite_weight()
        if bad is not None:  # a finite loss can still follow an overflowing update
            raise TrainingDiverged(
                f"training diverged in epoch {self.epoch}: weight {bad} is not finite. "
                f"{self.last_saved()} Lower the learning rate or the loss weights"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.save_generators(self.run_dir / "epochs" / f"epoch_{self.epoch:04d}", metrics)
        self.save_generators(self.run_dir / "last", metrics, overwrite=True)
        value = metrics.get(self.best_key, float("nan"))
        if self.is_better(value):
            self.best = float(value)
            self.save_generators(self.run_dir / "best", metrics, overwrite=True)
        save_state(self.run_dir / "last" / STATE_NAME, self.state_dict())
        self.log.write_csv(self.run_dir / "metrics.csv")
        self.log.plot(self.run_dir / "metrics.png", self.metric_keys, title=self.config.name)

    def save_generators(
        self, folder: Path, metrics: dict[str, float], overwrite: bool = False
    ) -> dict[str, Path]:
        """Each exported generator as safetensors + model card under ``folder/<name>/``."""
        from ..models import ModelCard, save_model

        arch, arch_kwargs = self.arch_kwargs()
        written = {}
        for key, (module, direction) in self.exported().items():
            card = ModelCard(
                name=f"{self.config.name}-{key}",
                arch=arch,
                arch_kwargs=arch_kwargs,
                direction=direction,
                mpp=self.config.mpp,
                tile_px=self.config.tile_px,
                training_data=self.training_data(),
                metrics={k: float(v) for k, v in metrics.items()},
                notes=f"epoch {self.epoch}, {self.global_step} steps; trainer config: "
                + ", ".join(f"{k}={v}" for k, v in asdict(self.config).items()),
            )
            written[key] = save_model(module, card, folder / key, overwrite=overwrite)
        return written

    # -- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        import torch

        return {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "order": torch.from_numpy(self.order) if self.order is not None else None,
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "pools": {k: p.state_dict() for k, p in self.pools().items()},
            "rng": rng_state(self.rng),
            "log": self.log.rows,
            "best": self.best,
            "loss_sums": dict(self.loss_sums),
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict) -> None:
        saved = {k: v for k, v in state["config"].items() if k not in RESUMABLE_CHANGES}
        now = {k: v for k, v in asdict(self.config).items() if k not in RESUMABLE_CHANGES}
        changed = sorted(k for k in now if saved.get(k) != now[k])
        if changed:
            raise ValueError(
                f"cannot resume: the saved run was trained with different {changed} "
                f"(saved {[saved.get(k) for k in changed]}, now {[now[k] for k in changed]})"
            )
        for key, module in self.modules().items():
            module.load_state_dict(state["modules"][key])
        for key, optimizer in self.optimizers().items():
            optimizer.load_state_dict(state["optimizers"][key])
        for scheduler, sd in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(sd)
        for key, scaler in self.scalers.items():
            scaler.load_state_dict(state["scalers"][key])
        for key, pool in self.pools().items():
            pool.load_state_dict(state["pools"][key], self.device)
        restore_rng(self.rng, state["rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.global_step = int(state["global_step"])
        self.order = state["order"].numpy() if state["order"] is not None else None
        self.log = MetricsLog(state["log"])
        self.best = state["best"]
        self.loss_sums = dict(state["loss_sums"])

    def save(self, path=None) -> Path:
        """Write the resume state (default ``run_dir/last/state.pt``)."""
        return save_state(path or self.run_dir / "last" / STATE_NAME, self.state_dict())

    def resume(self, path=None) -> None:
        """Load a resume state (default ``run_dir/last/state.pt``)."""
        self.load_state_dict(load_state(path or self.run_dir / "last" / STATE_NAME))

    def resume_if_possible(self) -> bool:
        if (self.run_dir / "last" / STATE_NAME).is_file():
            self.resume()
            return True
        return False

    # -- to be provided by subclasses -------------------------------------------------------
    def modules(self) -> dict:
        raise NotImplementedError

    def optimizers(self) -> dict:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def pools(self) -> dict:
        return {}

    def steps_per_epoch(self) -> int:
        """``config.steps_per_epoch``, else one pass over ``train_size()`` tiles in batches."""
        if self.config.steps_per_epoch is not None:
            return self.config.steps_per_epoch
        return max(1, self.train_size() // self.config.batch_size)

    def train_size(self) -> int:
        """Training tiles one epoch covers."""
        raise NotImplementedError

    def epoch_order(self) -> np.ndarray:
        raise NotImplementedError

    def step_batches(self, order: np.ndarray, step: int) -> tuple:
        raise NotImplementedError

    def train_step(self, *batches) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError

    def exported(self) -> dict:
        raise NotImplementedError

    def arch_kwargs(self) -> tuple[str, dict]:
        raise NotImplementedError

    def training_data(self) -> str:
        return ""
