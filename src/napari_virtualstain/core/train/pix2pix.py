"""Pyramid pix2pix trainer (BCI: "Generating IHC-stained slices from HE slices").

Paired H&E -> IHC training: the BCI generator (a ResNet generator, optionally with
self-attention), a conditional PatchGAN on (H&E, IHC) pairs, and an L1 loss on every level of a
Gaussian pyramid (repeated blur and x2 downsampling) of the generated and real IHC, with a weight
per level. Level 0 is the plain pix2pix L1. Defaults follow the BCI code (25 per level).
Evaluation: PSNR and SSIM on the test pairs (the BCI paper's Table 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import crop_and_augment
from .layouts import PairedSplit
from .runner import MIN_TILE_PX, Trainer, check_gan_config, check_tile_px, check_tile_sizes
from .tiles import load_png


@dataclass(frozen=True)
class Pix2PixConfig:
    """Hyper-parameters of Pyramid pix2pix.

    ``pyramid_weights[k]`` weights the L1 loss at pyramid level k (0 = full resolution); the
    number of weights is the number of levels. ``lambda_gan`` weights the conditional GAN loss.
    """

    attention: bool = False
    ngf: int = 64
    n_blocks: int = 9
    ndf: int = 64
    tile_px: int = 256
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_gan: float = 1.0
    pyramid_weights: tuple[float, ...] = (25.0, 25.0, 25.0, 25.0)
    decay_every_epochs: int = 2
    decay_rate: float = 0.9
    epochs: int = 10
    steps_per_epoch: int | None = None
    max_eval_tiles: int = 64
    seed: int = 0
    precision: str = "fp32"
    mpp: float | None = 0.5
    stain_a: str = "he"
    stain_b: str = "ki67"
    name: str = "pix2pix"

    def __post_init__(self) -> None:
        check_tile_px(self.tile_px, 4)
        if not self.pyramid_weights or any(w < 0 for w in self.pyramid_weights):
            raise ValueError(
                f"pyramid_weights must be non-empty and >= 0, got {self.pyramid_weights}"
            )
        if self.tile_px < 2 ** (len(self.pyramid_weights) - 1):
            raise ValueError(f"{len(self.pyramid_weights)} pyramid levels need tiles >= "
                             f"{2 ** (len(self.pyramid_weights) - 1)} px")  # fmt: skip
        check_gan_config(self)
        if not self.lambda_gan >= 0:
            raise ValueError(f"lambda_gan must be >= 0, got {self.lambda_gan}")


class Pix2PixTrainer(Trainer):
    """Paired training on a :class:`PairedSplit` (e.g. a BCI layout); see the module docstring."""

    metric_keys = ("test_psnr", "test_ssim", "loss_pyramid_l1", "loss_g_gan")
    best_key = "test_ssim"
    size_multiple = 4

    def __init__(self, config: Pix2PixConfig, data: PairedSplit, run_dir, device=None) -> None:
        import torch

        from ..models import build_discriminator, build_generator

        super().__init__(config, run_dir, device)
        self.data = data
        train_files = [p for pair in data.train for p in pair]
        check_tile_sizes(train_files, config.tile_px, "training crop (tile_px)")
        check_tile_sizes([p for pair in data.test for p in pair], MIN_TILE_PX, "the networks need")
        torch.manual_seed(config.seed)
        self.generator = build_generator("pyramid_pix2pix", **self.arch_kwargs()[1])
        self.generator = self.generator.train().to(self.device)
        self.discriminator = build_discriminator(6, config.ndf).train().to(self.device)
        self.setup_optimizers(self.generator.parameters(), self.discriminator.parameters())

    def modules(self) -> dict:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def train_size(self) -> int:
        return len(self.data.train)

    def epoch_order(self) -> np.ndarray:
        n = self.steps_per_epoch() * self.config.batch_size
        return self.cycled_permutation(len(self.data.train), n)

    def step_batches(self, order: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        b = self.config.batch_size
        pairs = []
        for i in order[step * b : (step + 1) * b]:
            he_path, ihc_path = self.data.train[int(i)]
            pairs.append(crop_and_augment([load_png(he_path), load_png(ihc_path)],
                                          self.config.tile_px, self.rng, str(he_path)))  # fmt: skip
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def exported(self) -> dict:
        c = self.config
        return {f"{c.stain_a}2{c.stain_b}": (self.generator, f"{c.stain_a}->{c.stain_b}")}

    def arch_kwargs(self) -> tuple[str, dict]:
        c = self.config
        kwargs = {"ngf": c.ngf, "n_blocks": c.n_blocks, "attention": c.attention}
        return "pyramid_pix2pix", kwargs

    def training_data(self) -> str:
        counts = f"paired: {len(self.data.train)} train / {len(self.data.test)} test pairs"
        return f"{counts}. {self.data.description}" if self.data.description else counts

    def pyramid_l1(self, fake, real):
        """Weighted L1 over the Gaussian pyramid levels of generated and real targets."""
        import torch.nn.functional as F

        from ..models import gaussian_pyramid

        n = len(self.config.pyramid_weights)
        fakes, reals = gaussian_pyramid(fake, n), gaussian_pyramid(real, n)
        return sum(
            w * F.l1_loss(f, r)
            for w, f, r in zip(self.config.pyramid_weights, fakes, reals, strict=True)
        )

    def train_step(self, real_a_uint8: np.ndarray, real_b_uint8: np.ndarray) -> dict[str, float]:
        """One discriminator and one generator update on a batch of aligned uint8 pairs."""
        import torch
        import torch.nn.functional as F

        from ..models.inference import to_network

        real_a = to_network(real_a_uint8, self.device)
        real_b = to_network(real_b_uint8, self.device)
        with self.autocast():
            fake_b = self.generator(real_a)
        fake_b = fake_b.float()
        # discriminator: real pairs -> 1, generated pairs -> 0 (logits, BCE as pix2pix "vanilla")
        self.set_requires_grad([self.discriminator], True)
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            pred_fake = self.discriminator(torch.cat([real_a, fake_b.detach()], 1)).float()
            pred_real = self.discriminator(torch.cat([real_a, real_b], 1)).float()
        loss_d = 0.5 * (
            F.binary_cross_entropy_with_logits(pred_fake, torch.zeros_like(pred_fake))
            + F.binary_cross_entropy_with_logits(pred_real, torch.ones_like(pred_real))
        )
        self.backward_step(loss_d, self.opt_d, "d")
        self.set_requires_grad([self.discriminator], False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            pred = self.discriminator(torch.cat([real_a, fake_b], 1)).float()
        loss_gan = self.config.lambda_gan * F.binary_cross_entropy_with_logits(
            pred, torch.ones_like(pred)
        )
        loss_pyr = self.pyramid_l1(fake_b, real_b)
        loss_g = loss_gan + loss_pyr
        self.backward_step(loss_g, self.opt_g, "g")
        return {
            "g_gan": float(loss_gan.detach()),
            "pyramid_l1": float(loss_pyr.detach()),
            "l1": float(F.l1_loss(fake_b.detach(), real_b)),
            "d": float(loss_d.detach()),
        }

    def translate(self, tiles_uint8: np.ndarray) -> np.ndarray:
        import torch

        from ..models.inference import from_network, to_network

        with torch.no_grad(), self.autocast():
            return from_network(self.generator(to_network(tiles_uint8, self.device)))

    def evaluate(self) -> dict[str, float]:
        """PSNR and SSIM of generated vs real IHC on the test pairs (train pairs if none)."""
        from ..metrics import psnr, ssim

        pairs = self.data.test[: self.config.max_eval_tiles] or self.data.train[:4]
        values = {"test_psnr": [], "test_ssim": []}
        for he_path, ihc_path in pairs:
            fake = self.translate(self.eval_tile(he_path)[None])[0]
            real = self.eval_tile(ihc_path)
            values["test_psnr"].append(min(psnr(real, fake), 100.0))
            values["test_ssim"].append(ssim(real, fake))
        out = {k: float(np.mean(v)) for k, v in values.items()}
        out["eval_pairs"] = float(len(pairs))
        out["eval_on_train"] = float(not self.data.test)  # no test pairs were given
        return out
