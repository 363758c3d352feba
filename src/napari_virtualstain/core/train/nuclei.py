"""Train the nucleus network (centre heatmap + foreground) on point tiles and instance masks.

``NucleiTrainer.fit()`` is a generator: it yields a :class:`NucleiProgress` every step, and the
caller decides how to show it. Each batch is drawn from a generator seeded by ``(seed, step)``,
so a resumed run draws the same batches as an uninterrupted one. A checkpoint is a folder of
safetensors (weights, optimiser moments) plus ``state.json``; nothing is pickled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..checks import check_fields
from .common import StepProgress
from .nuclei_data import NucleusSample, foreground_target, heatmap_target, random_crop, stain_jitter


@dataclass(frozen=True)
class NucleiTrainConfig:
    """The recipe. Units: ``mpp`` in µm/px, ``sigma_um`` in µm, ``crop_px`` at ``mpp``."""

    name: str = "nuclei"
    widths: tuple[int, ...] = (12, 24, 48, 96, 192)
    mpp: float = 0.5
    sigma_um: float = 1.0
    crop_px: int = 128
    batch_size: int = 8
    steps: int = 6000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    mask_fraction: float = 0.3
    scale_range: float = 0.2
    seed: int = 0
    checkpoint_every: int = 200
    # One thread: on a shared 2-core machine two threads oversubscribe (measured 3-10x slower).
    threads: int = 1

    def __post_init__(self) -> None:
        multiple = 2 ** (len(self.widths) - 1)
        if self.crop_px % multiple:
            raise ValueError(f"crop_px must be a multiple of {multiple}, got {self.crop_px}")
        check_fields(self, ("mpp", "sigma_um", "lr"), "> 0")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch_size and checkpoint_every must be >= 1")
        if not 0.0 <= self.mask_fraction <= 1.0 or not 0.0 <= self.scale_range < 1.0:
            raise ValueError("mask_fraction must be in [0, 1] and scale_range in [0, 1)")

    @classmethod
    def from_dict(cls, data: dict) -> NucleiTrainConfig:
        data = dict(data)
        data["widths"] = tuple(data["widths"])
        return cls(**data)


@dataclass(frozen=True)
class NucleiProgress(StepProgress):
    """One training step done (a :class:`Progress` of ``done`` = step of ``total`` = steps):
    ``losses`` of that step, wall time of the whole run so far."""

    losses: Mapping[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    checkpointed: bool = False

    @property
    def steps(self) -> int:
        return self.total


@dataclass
class _History:
    losses: list[list[float]] = field(default_factory=list)  # [step, total, heat, fg]


def make_batch(samples: list[NucleusSample], config: NucleiTrainConfig, step: int) -> dict:
    """Augmented crops and targets of one step, as numpy arrays (deterministic in ``step``)."""
    rng = np.random.default_rng([config.seed, step])
    masked = [s for s in samples if s.labels is not None]
    pointed = [s for s in samples if s.labels is None]
    sigma_px = config.sigma_um / config.mpp
    n = config.crop_px
    out = {
        "rgb": np.zeros((config.batch_size, 3, n, n), np.float32),
        "heat": np.zeros((config.batch_size, n, n), np.float32),
        "fg": np.zeros((config.batch_size, n, n), np.float32),
        "fg_w": np.zeros((config.batch_size, n, n), np.float32),
    }
    for i in range(config.batch_size):
        use_mask = masked and (not pointed or rng.random() < config.mask_fraction)
        pool = masked if use_mask else pointed
        sample = pool[int(rng.integers(len(pool)))]
        rgb, pts, labels = random_crop(sample, n, rng, config.scale_range)
        out["rgb"][i] = stain_jitter(rgb, rng).transpose(2, 0, 1)
        out["heat"][i] = heatmap_target(pts, (n, n), sigma_px)
        out["fg"][i], out["fg_w"][i] = foreground_target(labels, pts, (n, n), config.mpp)
    return out


def losses(logits, batch: dict) -> dict:
    """CenterNet's penalty-reduced focal loss on the heatmap, masked BCE on the foreground."""
    import torch
    import torch.nn.functional as F

    heat_logit, fg_logit = logits[:, 0], logits[:, 1]
    target = batch["heat"]
    pos = target >= 0.999
    log_p, log_q = F.logsigmoid(heat_logit), F.logsigmoid(-heat_logit)
    p = torch.sigmoid(heat_logit)
    pos_term = (log_p * (1 - p) ** 2)[pos].sum()
    neg_term = (log_q * p**2 * (1 - target) ** 4)[~pos].sum()
    heat = -(pos_term + neg_term) / pos.sum().clamp(min=1)
    bce = F.binary_cross_entropy_with_logits(fg_logit, batch["fg"], reduction="none")
    fg = (bce * batch["fg_w"]).sum() / batch["fg_w"].sum().clamp(min=1)
    return {"loss": heat + fg, "heat": heat, "fg": fg}


class NucleiTrainer:
    """Trains a :class:`NucleusUNet` into ``out`` (``last/`` checkpoint, ``log.jsonl``)."""

    def __init__(self, config: NucleiTrainConfig, samples: list[NucleusSample], out) -> None:
        import torch

        from ..segmentation._nucleus_net import NucleusUNet

        if not samples:
            raise ValueError("no training samples")
        self.config = config
        self.samples = samples
        self.out = Path(out)
        torch.manual_seed(config.seed)
        self.model = NucleusUNet(config.widths)
        self.optim = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.step = 0
        self.elapsed_s = 0.0

    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        t = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
        return c.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    # checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "last"

    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_file

        folder = self.checkpoint_dir
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()},
                  str(folder / "model.safetensors"))  # fmt: skip
        moments, steps = {}, {}
        names = dict(self.model.named_parameters())
        for name, param in names.items():
            state = self.optim.state.get(param)
            if state:
                moments[f"{name}.exp_avg"] = state["exp_avg"].contiguous()
                moments[f"{name}.exp_avg_sq"] = state["exp_avg_sq"].contiguous()
                steps[name] = float(state["step"])
        save_file(moments, str(folder / "optimizer.safetensors"))
        state = {"step": self.step, "elapsed_s": self.elapsed_s, "adam_steps": steps,
                 "config": asdict(self.config)}  # fmt: skip
        tmp = folder / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(folder / "state.json")  # the state names a complete set of tensors
        return folder

    def resume_if_possible(self) -> bool:
        """Load ``out/last`` when it exists; refuses a checkpoint of another recipe."""
        import torch
        from safetensors.torch import load_file

        folder = self.checkpoint_dir
        if not (folder / "state.json").is_file():
            return False
        state = json.loads((folder / "state.json").read_text())
        saved = NucleiTrainConfig.from_dict(state["config"])
        if saved.widths != self.config.widths or saved.mpp != self.config.mpp:
            raise ValueError(f"{folder} holds a model of another architecture or pixel size")
        self.model.load_state_dict(load_file(folder / "model.safetensors"))
        moments = load_file(folder / "optimizer.safetensors")
        for name, param in self.model.named_parameters():
            if name in state["adam_steps"]:
                self.optim.state[param] = {
                    "step": torch.tensor(state["adam_steps"][name]),
                    "exp_avg": moments[f"{name}.exp_avg"],
                    "exp_avg_sq": moments[f"{name}.exp_avg_sq"],
                }
        self.step, self.elapsed_s = int(state["step"]), float(state["elapsed_s"])
        return True

    # training ----------------------------------------------------------------------------
    def fit(self) -> Iterator[NucleiProgress]:
        import torch

        torch.set_num_threads(self.config.threads)
        self.model.train()
        self.out.mkdir(parents=True, exist_ok=True)
        log = (self.out / "log.jsonl").open("a")
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                # The next batch is built in a thread while this one trains.
                pending = pool.submit(make_batch, self.samples, self.config, self.step)
                while self.step < self.config.steps:
                    start = time.perf_counter()
                    batch = {k: torch.from_numpy(v) for k, v in pending.result().items()}
                    if self.step + 1 < self.config.steps:
                        pending = pool.submit(make_batch, self.samples, self.config, self.step + 1)
                    for group in self.optim.param_groups:
                        group["lr"] = self.lr_at(self.step)
                    parts = losses(self.model(batch["rgb"]), batch)
                    self.optim.zero_grad(set_to_none=True)
                    parts["loss"].backward()
                    self.optim.step()
                    self.step += 1
                    self.elapsed_s += time.perf_counter() - start
                    values = {k: float(v.detach()) for k, v in parts.items()}
                    log.write(json.dumps({"step": self.step, **values}) + "\n")
                    done = self.step % self.config.checkpoint_every == 0
                    if done or self.step == self.config.steps:
                        log.flush()
                        self.save_checkpoint()
                    yield NucleiProgress(
                        self.step, self.config.steps, " ".join(f"{k}={v:.3f}" for k, v in values.items()),
                        losses=values, elapsed_s=self.elapsed_s, checkpointed=done,
                    )  # fmt: skip
        finally:
            log.close()
        self.model.eval()

    def export(self, folder, fp16: bool = True, **card_fields) -> Path:
        """Write the trained network and its nucleus card into ``folder``."""
        from ..segmentation._nucleus_net import NucleusCard, count_parameters, save_model

        c = self.config
        training = {
            "recipe": asdict(c),
            "steps_done": self.step,
            "train_wall_s": round(self.elapsed_s, 1),
            "parameters": count_parameters(self.model),
            **card_fields.pop("training", {}),
        }
        card = NucleusCard(name=card_fields.pop("name", c.name), widths=c.widths, mpp=c.mpp,
                           sigma_um=c.sigma_um, training=training, **card_fields)  # fmt: skip
        return save_model(self.model.eval(), card, folder, fp16)


def match_points(pred: np.ndarray, truth: np.ndarray, radius_px: float) -> tuple[int, int, int]:
    """TP, FP, FN of a one-to-one (Hungarian) assignment of points closer than ``radius_px``."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    if len(pred) == 0 or len(truth) == 0:
        return 0, len(pred), len(truth)
    d = cdist(truth, pred)
    rows, cols = linear_sum_assignment(np.where(d <= radius_px, d, 1e6))
    tp = int((d[rows, cols] <= radius_px).sum())
    return tp, len(pred) - tp, len(truth) - tp


def tune_postprocessing(
    segmenter,
    samples: list[NucleusSample],
    peak_thresholds=(0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5),
    min_distances_um=(1.5, 2.0, 2.5, 3.0, 3.5),
    match_um: float = 3.0,
) -> dict:
    """Seed threshold and spacing maximising centre F1 on ``samples`` (a training-side split).

    ``samples`` are at the model's pixel size; the network runs once per sample and only the
    post-processing is repeated over the grid.
    """
    from .nuclei_data import label_centroids

    predictions = [(segmenter.predict(s.rgb), s.rgb, s.points) for s in samples]
    mpp, best = segmenter.mpp, None
    for t in peak_thresholds:
        for d in min_distances_um:
            counts = np.zeros(3, int)
            for (heat, fg), rgb, truth in predictions:
                labels = heatmap_to_labels_for(segmenter, heat, fg, t, d, rgb)
                counts += match_points(label_centroids(labels), truth, match_um / mpp)
            tp, fp, fn = counts
            f1 = 2 * tp / max(1, 2 * tp + fp + fn)
            if best is None or f1 > best["f1"]:
                best = {"peak_threshold": t, "min_distance_um": d, "f1": float(f1)}
    return best


def heatmap_to_labels_for(
    segmenter, heat, fg, peak_threshold: float, min_distance_um: float, rgb=None
):
    """The segmenter's own post-processing (OD extents and merges when ``rgb`` is given), with
    the seed threshold and spacing under test: tuning scores what inference will do."""
    from ..segmentation.learned import heatmap_to_labels

    return heatmap_to_labels(heat, fg, segmenter.mpp, peak_threshold, min_distance_um,
                             segmenter.foreground_threshold, segmenter.card.seed_radius_um,
                             rgb)  # fmt: skip


def prepare_data(points=(), masks=(), holdout_points=(), mpp: float = 0.5, seed: int = 0):
    """Samples of every folder and the split by tile (``holdout_points`` folders: all validation)."""
    from .nuclei_data import load_sources, parse_source, split_samples

    samples = load_sources(list(points) + list(holdout_points), list(masks), mpp)
    holdout = tuple(parse_source(text)[0].name for text in holdout_points)
    return samples, split_samples([s.name for s in samples], seed=seed, holdout_folders=holdout)


def finish_training(trainer: NucleiTrainer, samples, split, folder, fp16: bool = True) -> dict:
    """Tune the seed threshold and spacing on the tune split, then write the model folder.

    fp16 weights are kept only when they score no worse than fp32 on the tune split. Returns
    the tuning figures (also written into the card).
    """
    from ..segmentation.learned import LearnedSegmenter

    folder = Path(folder)
    tune = [s for s in samples if s.name in set(split.tune) and len(s.points)]
    card = {"name": trainer.config.name, "training": {"split": split.to_dict()}}
    trainer.export(folder, fp16=False, **json.loads(json.dumps(card)))
    tuned: dict = {"tune_tiles": len(tune)}
    if tune:
        tuned |= tune_postprocessing(LearnedSegmenter(folder), tune)
    params = {k: tuned[k] for k in ("peak_threshold", "min_distance_um") if k in tuned}
    card["training"]["tuning"] = tuned
    trainer.export(folder, fp16=False, **params, **json.loads(json.dumps(card)))
    if fp16:
        f1_32 = tuned.get("f1")
        trainer.export(folder, fp16=True, **params, **json.loads(json.dumps(card)))
        if tune:
            seg = LearnedSegmenter(folder)
            f1_16 = tune_postprocessing(seg, tune, (seg.peak_threshold,), (seg.min_distance_um,))
            tuned["f1_fp16"] = f1_16["f1"]
            if f1_16["f1"] < f1_32 - 1e-3:
                fp16 = False
        tuned["weights"] = "fp16" if fp16 else "fp32"
        card["training"]["tuning"] = tuned
        trainer.export(folder, fp16=fp16, **params, **card)
    return tuned
