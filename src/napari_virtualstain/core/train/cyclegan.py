"""CycleGAN trainer of seed 000 ("Virtual IHC based on an improved Cycle-GAN").

Two paper generators (A->B and B->A, A = H&E, B = Ki-67) and two PatchGAN discriminators;
L = L_adv + λ·L_cycle(L1) + β·L_ssim with L_ssim = 2 − SSIM(rec_B, B) − SSIM(rec_A, A), λ = β = 5;
least-squares adversarial loss and an image pool as junyanz's CycleGAN; Adam at 2e-4 decayed ×0.9
every 2 epochs; batch 4. The variant flag gives the four ablations of the paper's Fig. 3.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..checks import check_fields
from .common import ImagePool, TileSource
from .evaluation import make_hasher
from .layouts import UnpairedSplit
from .runner import MIN_TILE_PX, Trainer, check_gan_config, check_tile_px, check_tile_sizes

VARIANTS = {  # name -> (skip connections, SSIM loss)
    "plain": (False, False),
    "skip": (True, False),
    "ssim": (False, True),
    "skip+ssim": (True, True),
}


@dataclass(frozen=True)
class CycleGANConfig:
    """Hyper-parameters; defaults are the paper's (288 px tiles, batch 4, λ = β = 5).

    ``precision`` "bf16" / "fp16" trains with autocast (mixed precision; fp16 adds a gradient
    scaler and is meant for GPUs). ``lambda_identity`` > 0 adds junyanz's identity loss
    (weighted ``lambda_identity * lambda_cycle``). ``steps_per_epoch`` None = one pass over the
    larger training set.
    """

    variant: str = "skip+ssim"
    ngf: int = 64
    n_blocks: int = 10
    ndf: int = 64
    tile_px: int = 288
    batch_size: int = 4
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 5.0
    beta_ssim: float = 5.0
    lambda_identity: float = 0.0
    decay_every_epochs: int = 2
    decay_rate: float = 0.9
    pool_size: int = 50
    epochs: int = 10
    steps_per_epoch: int | None = None
    max_eval_tiles: int = 32
    phash_weights: str = "imagenet"
    seed: int = 0
    precision: str = "fp32"
    mpp: float | None = 0.5
    stain_a: str = "he"
    stain_b: str = "ki67"
    name: str = "cyclegan"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        check_tile_px(self.tile_px, 8)
        if self.n_blocks < 0 or self.pool_size < 0:
            raise ValueError("n_blocks and pool_size must be >= 0")
        check_fields(self, ("lambda_cycle", "beta_ssim", "lambda_identity"), ">= 0")
        check_gan_config(self)

    @property
    def skip(self) -> bool:
        return VARIANTS[self.variant][0]

    @property
    def ssim_loss(self) -> bool:
        return VARIANTS[self.variant][1]


class CycleGANTrainer(Trainer):
    """Unpaired A <-> B training with per-epoch held-out evaluation and checkpoints.

    Parameters
    ----------
    config : CycleGANConfig
    data : UnpairedSplit
        Training and held-out tiles; held-out B tiles whose names match A tiles are used as
        references for the P-hash of generated B (Table 1).
    run_dir : path
        Receives ``epochs/``, ``best/``, ``last/`` (models + cards + resume state),
        ``metrics.csv`` and ``metrics.png``.
    device : str or torch.device, optional
    """

    metric_keys = ("rec_a_ssim", "rec_a_ms_ssim", "rec_a_psnr", "rec_a_mae")
    best_key = "rec_a_ssim"

    def __init__(self, config: CycleGANConfig, data: UnpairedSplit, run_dir, device=None) -> None:
        import torch

        from ..models import build_discriminator, build_generator

        super().__init__(config, run_dir, device)
        self.data = data
        check_tile_sizes(data.train_a + data.train_b, config.tile_px, "training crop (tile_px)")
        check_tile_sizes(data.test_a + data.test_b, MIN_TILE_PX, "the networks need")
        self.source_a = TileSource(data.train_a, config.tile_px)
        self.source_b = TileSource(data.train_b, config.tile_px)
        torch.manual_seed(config.seed)
        gen = {"ngf": config.ngf, "n_blocks": config.n_blocks, "skip": config.skip}
        self.g_ab = build_generator("paper", **gen).train().to(self.device)
        self.g_ba = build_generator("paper", **gen).train().to(self.device)
        self.d_a = build_discriminator(3, config.ndf, init="xavier").train().to(self.device)
        self.d_b = build_discriminator(3, config.ndf, init="xavier").train().to(self.device)
        self.setup_optimizers(
            itertools.chain(self.g_ab.parameters(), self.g_ba.parameters()),
            itertools.chain(self.d_a.parameters(), self.d_b.parameters()),
        )
        self.pool_a, self.pool_b = ImagePool(config.pool_size), ImagePool(config.pool_size)
        self.references = {p.name: p for p in data.test_b}
        paired = any(p.name in self.references for p in data.test_a)
        self.hasher = make_hasher(config.phash_weights) if paired else None

    # -- what the generic runner needs ------------------------------------------------------
    def modules(self) -> dict:
        return {"g_ab": self.g_ab, "g_ba": self.g_ba, "d_a": self.d_a, "d_b": self.d_b}

    def pools(self) -> dict:
        return {"pool_a": self.pool_a, "pool_b": self.pool_b}

    def train_size(self) -> int:
        return max(len(self.source_a), len(self.source_b))

    def epoch_order(self) -> np.ndarray:
        """A indices in a fresh permutation (cycled), B indices drawn at random (unaligned)."""
        n = self.steps_per_epoch() * self.config.batch_size
        order_a = self.cycled_permutation(len(self.source_a), n)
        order_b = self.rng.integers(0, len(self.source_b), size=n)
        return np.stack([order_a, order_b])

    def exported(self) -> dict:
        c = self.config
        return {
            f"{c.stain_a}2{c.stain_b}": (self.g_ab, f"{c.stain_a}->{c.stain_b}"),
            f"{c.stain_b}2{c.stain_a}": (self.g_ba, f"{c.stain_b}->{c.stain_a}"),
        }

    def arch_kwargs(self) -> tuple[str, dict]:
        c = self.config
        return "paper", {"ngf": c.ngf, "n_blocks": c.n_blocks, "skip": c.skip}

    def training_data(self) -> str:
        d, c = self.data, self.config
        counts = (f"unpaired {c.stain_a}: {len(d.train_a)} train / {len(d.test_a)} held-out "
                  f"tiles; {c.stain_b}: {len(d.train_b)} train / {len(d.test_b)} held-out")  # fmt: skip
        return f"{counts}. {d.description}" if d.description else counts

    # -- one optimisation step --------------------------------------------------------------
    def train_step(self, real_a_uint8: np.ndarray, real_b_uint8: np.ndarray) -> dict[str, float]:
        """One generator and one discriminator update on a batch of uint8 tiles."""
        import torch
        import torch.nn.functional as F

        from ..metrics import ssim_torch
        from ..models.inference import to_network

        c = self.config
        real_a = to_network(real_a_uint8, self.device)
        real_b = to_network(real_b_uint8, self.device)
        self.set_requires_grad([self.d_a, self.d_b], False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            fake_b = self.g_ab(real_a)
            rec_a = self.g_ba(fake_b)
            fake_a = self.g_ba(real_b)
            rec_b = self.g_ab(fake_a)
            pred_fb, pred_fa = self.d_b(fake_b), self.d_a(fake_a)
        # losses in fp32: SSIM's variance terms lose too much in bf16
        rec_a, rec_b, fake_a, fake_b = rec_a.float(), rec_b.float(), fake_a.float(), fake_b.float()
        loss = {
            "g_adv": F.mse_loss(pred_fb.float(), torch.ones_like(pred_fb, dtype=torch.float32))
            + F.mse_loss(pred_fa.float(), torch.ones_like(pred_fa, dtype=torch.float32)),
            "cycle": c.lambda_cycle * (F.l1_loss(rec_a, real_a) + F.l1_loss(rec_b, real_b)),
        }
        if c.ssim_loss:
            loss["ssim"] = c.beta_ssim * (2 - ssim_torch(rec_b, real_b) - ssim_torch(rec_a, real_a))
        if c.lambda_identity > 0:
            with self.autocast():
                idt_b, idt_a = self.g_ab(real_b), self.g_ba(real_a)
            loss["identity"] = (c.lambda_identity * c.lambda_cycle) * (
                F.l1_loss(idt_b.float(), real_b) + F.l1_loss(idt_a.float(), real_a)
            )
        loss_g = sum(loss.values())
        self.backward_step(loss_g, self.opt_g, "g")
        self.set_requires_grad([self.d_a, self.d_b], True)
        self.opt_d.zero_grad(set_to_none=True)
        loss["d_a"] = self._d_loss(self.d_a, real_a, self.pool_a.query(fake_a, self.rng))
        loss["d_b"] = self._d_loss(self.d_b, real_b, self.pool_b.query(fake_b, self.rng))
        self.backward_step(loss["d_a"] + loss["d_b"], self.opt_d, "d")
        out = {k: float(v.detach()) for k, v in loss.items()}
        out["g_total"] = float(loss_g.detach())
        return out

    def _d_loss(self, d, real, fake):
        import torch
        import torch.nn.functional as F

        with self.autocast():
            pred_real, pred_fake = d(real), d(fake.detach())
        pred_real, pred_fake = pred_real.float(), pred_fake.float()
        return 0.5 * (
            F.mse_loss(pred_real, torch.ones_like(pred_real))
            + F.mse_loss(pred_fake, torch.zeros_like(pred_fake))
        )

    def step_batches(self, order: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
        b = self.config.batch_size
        idx_a, idx_b = order[0, step * b : (step + 1) * b], order[1, step * b : (step + 1) * b]
        return self.source_a.batch(idx_a, self.rng), self.source_b.batch(idx_b, self.rng)

    # -- held-out evaluation ----------------------------------------------------------------
    def translate(self, tiles_uint8: np.ndarray, direction: str = "ab") -> np.ndarray:
        """Run one generator on uint8 tiles (no gradients); ``direction`` "ab" or "ba"."""
        import torch

        from ..models.inference import from_network, to_network

        module = self.g_ab if direction == "ab" else self.g_ba
        with torch.no_grad(), self.autocast():
            return from_network(module(to_network(tiles_uint8, self.device)))

    def evaluate(self) -> dict[str, float]:
        """Reconstruction metrics of held-out A (and P-hash of generated B where paired)."""
        from .evaluation import (
            image_metrics,
            mean_metrics,
            phash_metric,
        )

        files = self.data.test_a[: self.config.max_eval_tiles] or self.data.train_a[:4]
        references = self.references if self.hasher is not None else {}
        rows, phash = [], []
        for path in files:
            real_a = self.eval_tile(path)
            fake_b = self.translate(real_a[None], "ab")
            rec_a = self.translate(fake_b, "ba")[0]
            rows.append(image_metrics(real_a, rec_a))
            if path.name in references:
                reference = self.eval_tile(references[path.name])
                if reference.shape == real_a.shape:
                    phash.append(phash_metric(self.hasher, fake_b[0], reference))
        metrics = mean_metrics(rows, prefix="rec_a_")
        metrics["eval_tiles"] = float(len(rows))
        metrics["eval_on_train"] = float(not self.data.test_a)  # no held-out tiles were given
        if phash:
            metrics["fake_b_phash"] = float(np.mean(phash))
        return metrics
