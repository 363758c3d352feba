"""Nucleus training: the split, the augmentation's geometry, a few steps, resuming, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_virtualstain.core.train.nuclei_data import (
    NucleusSample,
    foreground_target,
    heatmap_target,
    label_centroids,
    load_points_folder,
    random_crop,
    split_samples,
    stain_jitter,
)

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "nuclei" / "endonuke_1590_crop96"


def test_split_is_by_tile_stratified_fixed_and_disjoint():
    names = [f"pts/{i:04d}" for i in range(100)]
    names += [f"dsb/he_{i}" for i in range(4)] + [f"dsb/hematoxylin_{i}" for i in range(8)]
    names += [f"other/slide_{i}" for i in range(5)]
    split = split_samples(names, seed=0, holdout_folders=("other",))
    parts = [set(split.train), set(split.tune), set(split.val)]
    assert sum(len(p) for p in parts) == len(names) == len(set().union(*parts))
    assert {f"other/slide_{i}" for i in range(5)} <= parts[2]
    assert sum(n.startswith("pts/") for n in split.val) == 15
    assert sum(n.startswith("pts/") for n in split.tune) == 10
    assert sum(n.startswith("dsb/he_") for n in split.val) == 1
    assert sum(n.startswith("dsb/hematoxylin_") for n in split.val) == 2
    assert split_samples(list(reversed(names)), seed=0, holdout_folders=("other",)) == split
    assert split_samples(names, seed=1, holdout_folders=("other",)).val != split.val


def test_crops_keep_points_and_masks_on_their_nuclei():
    # Dark squares with their centres as points and as instance masks; after scale, flips and
    # turns every returned point must still sit on a dark pixel of the same instance.
    rgb = np.full((90, 70, 3), 250, np.uint8)
    labels = np.zeros((90, 70), np.int32)
    centres = [(10, 12), (40, 50), (75, 20), (60, 60)]
    for k, (y, x) in enumerate(centres, start=1):
        rgb[y - 3 : y + 4, x - 3 : x + 4] = 30
        labels[y - 3 : y + 4, x - 3 : x + 4] = k
    sample = NucleusSample("t/x", rgb, np.array(centres, np.float32), labels, 0.5)
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(40):
        crop, pts, lab = random_crop(sample, 48, rng, scale_range=0.2)
        assert crop.shape == (48, 48, 3) and lab.shape == (48, 48)
        for y, x in pts:
            iy, ix = int(round(y)), int(round(x))
            assert crop[iy, ix].max() < 100
            assert lab[iy, ix] > 0
            seen += 1
    assert seen > 20


def test_targets_and_jitter():
    pts = np.array([[10.0, 10.0], [30.0, 5.0]])
    heat = heatmap_target(pts, (40, 40), sigma_px=2.0)
    assert heat[10, 10] == 1.0 and heat[30, 5] == 1.0 and heat[20, 30] < 1e-6
    target, weight = foreground_target(None, pts, (40, 40), mpp=0.5)
    assert target[10, 10] == 1 and weight[10, 10] == 1
    assert target[25, 35] == 0 and weight[25, 35] == 1  # far from every point: background
    assert weight[10, 14] == 0  # the ring of unknown extent is left out of the loss
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = stain_jitter(rgb, np.random.default_rng(2))
    assert out.dtype == np.uint8 and out.shape == rgb.shape and not np.array_equal(out, rgb)


def _fixture_sample() -> list[NucleusSample]:
    from PIL import Image

    rgb = np.asarray(Image.open(FIXTURE.with_suffix(".png")).convert("RGB"))
    yx = np.loadtxt(FIXTURE.with_suffix(".txt"), ndmin=2)[:, 1::-1].astype(np.float32)
    labels = np.zeros(rgb.shape[:2], np.int32)
    for k, (y, x) in enumerate(yx.astype(int), start=1):
        labels[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3] = k
    return [
        NucleusSample("pts/a", rgb, yx, None, 0.5),
        NucleusSample("masks/b", rgb, label_centroids(labels), labels, 0.5),
    ]


def test_training_runs_a_few_steps_and_resumes_to_the_same_weights(tmp_path):
    torch = pytest.importorskip("torch")
    from napari_virtualstain.core.segmentation._nucleus_net import load_model
    from napari_virtualstain.core.train.nuclei import NucleiTrainConfig, NucleiTrainer

    samples = _fixture_sample()
    config = NucleiTrainConfig(widths=(4, 8), crop_px=32, batch_size=2, steps=4,
                               checkpoint_every=2, warmup_steps=1)  # fmt: skip
    straight = NucleiTrainer(config, samples, tmp_path / "straight")
    progress = list(straight.fit())
    assert [p.step for p in progress] == [1, 2, 3, 4]
    assert all(np.isfinite(p.losses["loss"]) for p in progress)

    interrupted = NucleiTrainer(config, samples, tmp_path / "resumed")
    for p in interrupted.fit():
        if p.step == 2:
            break  # killed right after the checkpoint of step 2
    resumed = NucleiTrainer(config, samples, tmp_path / "resumed")
    assert resumed.resume_if_possible() and resumed.step == 2
    assert [p.step for p in resumed.fit()] == [3, 4]
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name

    folder = resumed.export(tmp_path / "model", fp16=True, name="tiny")
    net, card = load_model(folder)
    assert card.name == "tiny" and card.widths == (4, 8) and card.training["steps_done"] == 4
    x = torch.from_numpy(samples[0].rgb[:32, :32].transpose(2, 0, 1).copy())[None].float()
    with torch.no_grad():
        assert torch.allclose(net(x), resumed.model.eval()(x), atol=2e-2)


def test_resume_refuses_a_checkpoint_of_another_architecture(tmp_path):
    pytest.importorskip("torch")
    from napari_virtualstain.core.train.nuclei import NucleiTrainConfig, NucleiTrainer

    samples = _fixture_sample()
    small = NucleiTrainConfig(widths=(4, 8), crop_px=32, batch_size=1, steps=1)
    list(NucleiTrainer(small, samples, tmp_path).fit())
    other = NucleiTrainConfig(widths=(8, 16), crop_px=32, batch_size=1, steps=1)
    with pytest.raises(ValueError, match="another architecture"):
        NucleiTrainer(other, samples, tmp_path).resume_if_possible()


def test_points_folder_is_resampled_to_the_model_pixel_size(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.open(FIXTURE.with_suffix(".png")).save(tmp_path / "images" / "t.png")
    (tmp_path / "labels" / "t.txt").write_text("10 20 0\n50 80 1\n")
    (sample,) = load_points_folder(tmp_path, mpp=0.25, model_mpp=0.5)
    assert sample.rgb.shape == (48, 48, 3)
    np.testing.assert_allclose(sample.points, [[9.75, 4.75], [39.75, 24.75]])
