"""junyanz / BCI checkpoints load unchanged, with the architecture inferred from the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_virtualstain.core.models import (
    CheckpointError,
    build_generator,
    infer_tiles,
    load_model,
)
from tests.support.junyanz_layout import (
    random_state_dict,
    resnet_forward,
    resnet_layout,
    unet_layout,
)

NORMS = ["instance", "batch", "none"]


def save_like_junyanz(sd: dict, path) -> None:
    # upstream BaseModel.save_networks: torch.save(net.cpu().state_dict(), path)
    torch.save(sd, path)


@pytest.mark.parametrize("n_blocks", [9, 6])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dropout", [False, True])
def test_resnet_checkpoints_load_with_inferred_architecture(tmp_path, n_blocks, norm, dropout):
    sd = random_state_dict(resnet_layout(2, n_blocks, norm, dropout))
    path = tmp_path / "latest_net_G_A.pth"
    save_like_junyanz(sd, path)
    loaded = load_model(path, device="cpu")
    assert loaded.card.arch == f"resnet_{n_blocks}blocks"
    assert loaded.card.arch_kwargs["norm"] == norm
    assert loaded.card.arch_kwargs["use_dropout"] is dropout
    assert loaded.card.arch_kwargs["ngf"] == 2
    assert loaded.card.direction == "A->B"
    got = loaded.module.state_dict()
    assert set(got) == set(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)


@pytest.mark.parametrize("num_downs", [8, 7])
@pytest.mark.parametrize("norm", NORMS)
def test_unet_checkpoints_load_with_inferred_architecture(tmp_path, num_downs, norm):
    sd = random_state_dict(unet_layout(2, num_downs, norm))
    path = tmp_path / "latest_net_G.pth"
    save_like_junyanz(sd, path)
    loaded = load_model(path, device="cpu")
    assert loaded.card.arch == {8: "unet_256", 7: "unet_128"}[num_downs]
    assert loaded.card.arch_kwargs["norm"] == norm
    got = loaded.module.state_dict()
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    size = 2**num_downs
    out = infer_tiles(loaded.module, np.full((1, size, size, 3), 128, np.uint8), "cpu")
    assert out.shape == (1, size, size, 3)


def test_loaded_resnet_computes_the_upstream_function(tmp_path):
    sd = random_state_dict(resnet_layout(4, 6, "instance", False), seed=3)
    save_like_junyanz(sd, tmp_path / "latest_net_G_B.pth")
    loaded = load_model(tmp_path / "latest_net_G_B.pth", device="cpu")
    assert loaded.card.direction == "B->A"
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    ours = infer_tiles(loaded.module, tiles, "cpu").astype(int)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        ref = resnet_forward(sd, x, 6)
    ref = ((ref + 1) * 127.5).round().clamp(0, 255).permute(0, 2, 3, 1).numpy().astype(int)
    assert np.abs(ours - ref).max() <= 1


def test_dataparallel_prefix_old_instance_stats_and_wrappers(tmp_path):
    layout = resnet_layout(2, 9, "instance", False, old_instance=True)
    sd = random_state_dict(layout)
    assert any(k.endswith("running_mean") for k in sd)  # the old-checkpoint keys are there
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}
    torch.save(wrapped, tmp_path / "old.pth")
    loaded = load_model(tmp_path / "old.pth", device="cpu")
    assert loaded.card.arch == "resnet_9blocks" and loaded.card.arch_kwargs["norm"] == "instance"
    assert not any("running" in k for k in loaded.module.state_dict())


def test_bci_pyramid_checkpoint_loads_as_resnet_9blocks(tmp_path):
    # BCI's Pyramid pix2pix saves a junyanz resnet_9blocks generator
    torch.manual_seed(0)
    g = build_generator("pyramid_pix2pix", ngf=2, attention=False)
    torch.save(g.state_dict(), tmp_path / "latest_net_G.pth")
    loaded = load_model(tmp_path / "latest_net_G.pth", device="cpu")
    assert loaded.card.arch == "resnet_9blocks"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), g(x))


def test_pyramid_attention_weights_are_recognised(tmp_path):
    g = build_generator("pyramid_pix2pix", ngf=2, attention=True)
    torch.save(g.state_dict(), tmp_path / "att.pth")
    loaded = load_model(tmp_path / "att.pth", device="cpu")
    assert loaded.card.arch == "pyramid_pix2pix"
    assert loaded.card.arch_kwargs["attention"] is True


def test_unknown_layout_names_expected_and_found_keys(tmp_path):
    torch.save({"encoder.0.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "other.pth", device="cpu")
    message = str(err.value)
    assert "model.1.weight" in message and "encoder.0.weight (8, 3, 3, 3)" in message


def test_wrong_block_count_is_a_clear_error(tmp_path):
    sd = random_state_dict(resnet_layout(2, 7, "instance", False))
    torch.save(sd, tmp_path / "seven.pth")
    with pytest.raises(CheckpointError, match="found 7 residual blocks"):
        load_model(tmp_path / "seven.pth", device="cpu")


def test_mismatched_layout_names_keys_and_shapes(tmp_path):
    sd = random_state_dict(resnet_layout(2, 9, "instance", False))
    sd["model.4.weight"] = torch.zeros(5, 2, 3, 3)
    del sd["model.7.bias"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "broken.pth", device="cpu")
    message = str(err.value)
    assert "model.7.bias" in message
    assert "model.4.weight: expected (4, 2, 3, 3), found (5, 2, 3, 3)" in message
