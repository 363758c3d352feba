"""CycleGAN trainer: the four ablation variants train, resume exactly, and write a run folder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_virtualstain.core.train.cyclegan import VARIANTS, CycleGANConfig, CycleGANTrainer

TINY = dict(ngf=4, n_blocks=1, ndf=4, tile_px=32, batch_size=2, pool_size=4, max_eval_tiles=2)


def run_steps(trainer, n):
    fit = trainer.fit()
    return [next(fit) for _ in range(n)], fit


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_losses_are_finite_and_fall(tmp_path, unpaired, one_thread, variant):
    config = CycleGANConfig(variant=variant, lr=2e-3, epochs=1, steps_per_epoch=24, **TINY)
    trainer = CycleGANTrainer(config, unpaired, tmp_path / "run", "cpu")
    assert trainer.g_ab.skip is VARIANTS[variant][0]
    progress, _ = run_steps(trainer, 24)
    losses = [p.losses for p in progress]
    assert all(math.isfinite(v) for row in losses for v in row.values())
    assert ("ssim" in losses[0]) is VARIANTS[variant][1]
    # the cycle (and SSIM) terms must fall on this easy, colour-only task
    first = np.mean([r["cycle"] + r.get("ssim", 0.0) for r in losses[:4]])
    last = np.mean([r["cycle"] + r.get("ssim", 0.0) for r in losses[-4:]])
    assert last < 0.9 * first


def test_resume_takes_the_same_next_step(tmp_path, unpaired, one_thread):
    config = CycleGANConfig(epochs=2, steps_per_epoch=3, lambda_identity=0.5, **TINY)
    trainer = CycleGANTrainer(config, unpaired, tmp_path / "run", "cpu")
    _, fit = run_steps(trainer, 2)  # mid-epoch, pool partly filled
    state = trainer.save(tmp_path / "mid.pt")
    expected = next(fit)
    resumed = CycleGANTrainer(config, unpaired, tmp_path / "run2", "cpu")
    resumed.resume(state)
    got = next(resumed.fit())
    assert (got.epoch, got.step) == (expected.epoch, expected.step)
    for key, value in expected.losses.items():
        assert got.losses[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    other = CycleGANConfig(epochs=2, steps_per_epoch=3, **{**TINY, "ngf": 8})
    with pytest.raises(ValueError, match="ngf"):
        CycleGANTrainer(other, unpaired, tmp_path / "run3", "cpu").resume(state)


def test_epoch_writes_checkpoints_metrics_and_plot(tmp_path, unpaired, one_thread):
    from napari_virtualstain.core.models import ModelCard, load_model

    config = CycleGANConfig(epochs=2, steps_per_epoch=2, name="tiny", **TINY)
    trainer = CycleGANTrainer(config, unpaired, tmp_path / "run", "cpu")
    epochs = [p for p in trainer.fit() if p.phase == "epoch"]
    assert [p.metrics["epoch"] for p in epochs] == [1, 2]
    for key in ("rec_a_ssim", "rec_a_ms_ssim", "rec_a_psnr", "rec_a_mae"):
        assert all(math.isfinite(p.metrics[key]) for p in epochs), key
    run = tmp_path / "run"
    assert (run / "metrics.png").stat().st_size > 1000
    assert (run / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
    for folder in ("epochs/epoch_0001", "epochs/epoch_0002", "best", "last"):
        for name in ("he2ki67", "ki672he"):
            assert (run / folder / name / "weights.safetensors").is_file(), (folder, name)
    card = ModelCard.from_json(run / "last" / "he2ki67" / "card.json")
    assert card.direction == "he->ki67" and card.tile_px == 32
    assert card.metrics["rec_a_ssim"] == pytest.approx(epochs[-1].metrics["rec_a_ssim"])
    loaded = load_model(run / "last" / "he2ki67", device="cpu")
    tiles = np.stack([trainer.eval_tile(p) for p in unpaired.test_a])
    assert np.array_equal(loaded_translate(loaded.module, tiles), trainer.translate(tiles, "ab"))
    # LR decays x0.9 every 2 epochs
    assert trainer.schedulers[0].get_last_lr()[0] == pytest.approx(2e-4 * 0.9)
    # a finished run resumes to "nothing left to do"; more epochs continue from the state
    again = CycleGANTrainer(config, unpaired, run, "cpu")
    assert again.resume_if_possible() and list(again.fit()) == []


def loaded_translate(module, tiles):
    import torch

    from napari_virtualstain.core.models.inference import from_network, to_network

    with torch.no_grad():
        return from_network(module(to_network(tiles, "cpu")))


def test_phash_against_paired_references(tmp_path, unpaired, one_thread):
    from napari_virtualstain.core.train.layouts import UnpairedSplit

    # held-out B files named like the held-out A files act as references (Table 1's P-hash)
    refs = []
    for a in unpaired.test_a:
        ref = a.parent.parent / "refs" / a.name
        ref.parent.mkdir(exist_ok=True)
        ref.write_bytes(a.read_bytes())
        refs.append(ref)
    data = UnpairedSplit(unpaired.train_a, unpaired.train_b, unpaired.test_a, tuple(refs))
    config = CycleGANConfig(epochs=1, steps_per_epoch=1, phash_weights="random", **TINY)
    trainer = CycleGANTrainer(config, data, tmp_path / "run", "cpu")
    metrics = trainer.evaluate()
    assert -1.0 <= metrics["fake_b_phash"] <= 1.0
    assert (
        "fake_b_phash" not in CycleGANTrainer(config, unpaired, tmp_path / "r2", "cpu").evaluate()
    )


def test_config_validates():
    with pytest.raises(ValueError, match="variant"):
        CycleGANConfig(variant="attention")
    with pytest.raises(ValueError, match="multiple of 8"):
        CycleGANConfig(tile_px=100)
    for tile_px in (0, -8, 16):  # 0 crashed inside the network, 16 in the discriminator
        with pytest.raises(ValueError, match=">= 24"):
            CycleGANConfig(tile_px=tile_px)
    for field in ("lambda_cycle", "beta_ssim", "lambda_identity", "lr", "beta1"):
        for bad in (float("inf"), float("nan")):
            with pytest.raises(ValueError, match=f"{field} must be a finite number"):
                CycleGANConfig(**{field: bad})
    config = CycleGANConfig()
    assert (config.lambda_cycle, config.beta_ssim, config.batch_size, config.tile_px) == (
        5,
        5,
        4,
        288,
    )
    assert (config.decay_rate, config.decay_every_epochs, config.lr) == (0.9, 2, 2e-4)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(
    tmp_path, unpaired, one_thread
):
    from napari_virtualstain.core.train.common import load_state
    from napari_virtualstain.core.train.runner import TrainingDiverged

    config = CycleGANConfig(epochs=2, steps_per_epoch=2, **TINY)
    trainer = CycleGANTrainer(config, unpaired, tmp_path / "run", "cpu")
    step = trainer.train_step

    def diverging(*batches):
        losses = step(*batches)
        if trainer.global_step == 3:  # epoch 2, step 2
            losses["cycle"] = float("inf")
        return losses

    trainer.train_step = diverging
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2 .*cycle=inf") as err:
        list(trainer.fit())
    assert "epoch 1, step 0" in str(err.value)  # names the checkpoint that is kept
    assert int(load_state(tmp_path / "run" / "last")["epoch"]) == 1
    assert not (tmp_path / "run" / "epochs" / "epoch_0002").exists()


def test_non_finite_weights_are_never_saved(tmp_path, unpaired, one_thread):
    import torch

    from napari_virtualstain.core.train.runner import TrainingDiverged

    config = CycleGANConfig(epochs=1, steps_per_epoch=1, **TINY)
    trainer = CycleGANTrainer(config, unpaired, tmp_path / "run", "cpu")
    step = trainer.train_step

    def poisoned(*batches):
        losses = step(*batches)  # finite losses, but the update overflowed
        with torch.no_grad():
            next(trainer.g_ab.parameters()).fill_(float("nan"))
        return losses

    trainer.train_step = poisoned
    with pytest.raises(TrainingDiverged, match="g_ab.* not finite.*No checkpoint"):
        list(trainer.fit())
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / "last").exists()
    assert trainer.save_if_finite() is None  # what a cancel would save: nothing
    assert not (tmp_path / "run" / "last").exists()


def test_a_run_closed_between_steps_resumes_at_that_step(tmp_path, unpaired, one_thread):
    config = CycleGANConfig(epochs=1, steps_per_epoch=4, **TINY)
    whole = CycleGANTrainer(config, unpaired, tmp_path / "whole", "cpu")
    expected = [p for p in whole.fit() if p.phase == "train"]
    stopped = CycleGANTrainer(config, unpaired, tmp_path / "run", "cpu")
    _, fit = run_steps(stopped, 2)
    fit.close()  # Ctrl-C in the CLI, cancel in a widget
    resumed = CycleGANTrainer(config, unpaired, tmp_path / "run", "cpu")
    assert resumed.resume_if_possible()
    assert (resumed.epoch, resumed.step) == (0, 2)
    got = next(resumed.fit())
    assert got.step == 3
    for key, value in expected[2].losses.items():
        assert got.losses[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
