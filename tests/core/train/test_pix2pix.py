"""Pyramid pix2pix trainer on pairs made here: an image and a known colour transform of it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_virtualstain.core.train.pix2pix import Pix2PixConfig, Pix2PixTrainer

TINY = dict(ngf=8, n_blocks=1, ndf=8, tile_px=32, batch_size=2, max_eval_tiles=2)


@pytest.mark.slow
@pytest.mark.parametrize("attention", [False, True])
def test_loss_falls_and_psnr_rises(tmp_path, paired, one_thread, attention):
    config = Pix2PixConfig(attention=attention, lr=2e-3, epochs=1, steps_per_epoch=30, **TINY)
    trainer = Pix2PixTrainer(config, paired, tmp_path / "run", "cpu")
    assert (
        any(type(m).__name__ == "SelfAttention" for m in trainer.generator.modules()) is attention
    )
    before = trainer.evaluate()
    progress = list(trainer.fit())
    steps = [p.losses for p in progress if p.phase == "train"]
    after = progress[-1].metrics
    assert len(steps) == 30
    assert all(math.isfinite(v) for row in steps for v in row.values())
    first = np.mean([r["pyramid_l1"] for r in steps[:5]])
    last = np.mean([r["pyramid_l1"] for r in steps[-5:]])
    assert last < 0.7 * first
    assert after["test_psnr"] > before["test_psnr"] + 3.0
    assert after["test_ssim"] > before["test_ssim"]


def test_pyramid_loss_weights_each_level(tmp_path, paired, one_thread):
    import torch

    from napari_virtualstain.core.models import gaussian_pyramid

    config = Pix2PixConfig(pyramid_weights=(0.0, 0.0, 2.0), **TINY)
    trainer = Pix2PixTrainer(config, paired, tmp_path / "run", "cpu")
    torch.manual_seed(0)
    fake, real = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    expected = 2.0 * (gaussian_pyramid(fake, 3)[2] - gaussian_pyramid(real, 3)[2]).abs().mean()
    assert float(trainer.pyramid_l1(fake, real)) == pytest.approx(float(expected), rel=1e-6)
    # a coarse-only loss ignores what the blur removes: pixel noise costs (almost) nothing
    noisy = real + 0.2 * torch.randn_like(real)
    fine_only = Pix2PixTrainer(Pix2PixConfig(pyramid_weights=(1.0,), **TINY), paired,
                               tmp_path / "r2", "cpu")  # fmt: skip
    assert float(trainer.pyramid_l1(noisy, real)) < 0.5 * float(fine_only.pyramid_l1(noisy, real))


def test_resume_at_an_epoch_boundary(tmp_path, paired, one_thread):
    config = Pix2PixConfig(epochs=3, steps_per_epoch=2, **TINY)
    trainer = Pix2PixTrainer(config, paired, tmp_path / "run", "cpu")
    fit = trainer.fit()
    seen = [next(fit) for _ in range(3)]  # two steps and the epoch report
    assert seen[-1].phase == "epoch"
    expected = next(fit)
    resumed = Pix2PixTrainer(config, paired, tmp_path / "run", "cpu")
    assert resumed.resume_if_possible()  # the epoch wrote run/last/state.pt
    got = next(resumed.fit())
    assert (got.epoch, got.step) == (expected.epoch, expected.step) == (1, 1)
    for key, value in expected.losses.items():
        assert got.losses[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert (tmp_path / "run" / "best" / "he2ki67" / "card.json").is_file()
    assert "test_psnr" in (tmp_path / "run" / "metrics.csv").read_text()


def test_config_validates():
    with pytest.raises(ValueError, match="pyramid_weights"):
        Pix2PixConfig(pyramid_weights=())
    with pytest.raises(ValueError, match="pyramid levels"):
        Pix2PixConfig(tile_px=24, pyramid_weights=(1,) * 6)
    with pytest.raises(ValueError, match="multiple of 4"):
        Pix2PixConfig(tile_px=30)
    for tile_px in (0, -8, 16):  # 0 crashed inside the network
        with pytest.raises(ValueError, match=">= 24"):
            Pix2PixConfig(tile_px=tile_px)
    for field in ("lr", "lambda_gan", "beta1", "decay_rate"):
        with pytest.raises(ValueError, match=f"{field} must be a finite number"):
            Pix2PixConfig(**{field: float("inf")})
    with pytest.raises(ValueError, match="pyramid_weights must be a finite number"):
        Pix2PixConfig(pyramid_weights=(25.0, float("nan")))
