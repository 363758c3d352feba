"""Our checkpoint format (safetensors + card), safe loading, refusal of bad files."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from napari_virtualstain.core.models import (
    CheckpointError,
    ModelCard,
    build_generator,
    infer_tiles,
    load_model,
    save_model,
    sha256_file,
)


def small_card(**changes) -> ModelCard:
    fields = dict(
        name="tiny-paper",
        arch="paper",
        arch_kwargs={"ngf": 2, "n_blocks": 2, "skip": False},
        direction="he->ki67",
        mpp=0.5,
        tile_px=288,
        normalisation="[-1,1]",
        training_data="random weights (test)",
        metrics={"ssim": 0.5},
        notes="bf16 vs fp32: 0.3 grey levels mean",
    )
    return ModelCard(**(fields | changes))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    module = build_generator("paper", ngf=2, n_blocks=2, skip=False)
    folder = save_model(module, small_card(), tmp_path / "tiny")
    return module, folder


def test_round_trip_keeps_weights_outputs_and_card(saved):
    module, folder = saved
    loaded = load_model(folder, device="cpu")
    assert loaded.card.arch_kwargs == {"ngf": 2, "n_blocks": 2, "skip": False}
    assert loaded.card.mpp == 0.5 and loaded.card.metrics == {"ssim": 0.5}
    assert loaded.card.sha256 == sha256_file(folder / "weights.safetensors")
    assert loaded.module.skip is False
    tiles = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(infer_tiles(module, tiles), infer_tiles(loaded.module, tiles))
    # the card file and the weights file load the same model
    again = load_model(folder / "card.json", device="cpu")
    assert again.card == loaded.card


def test_save_never_overwrites(saved):
    module, folder = saved
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(module, small_card(), folder)
    save_model(module, small_card(notes="v2"), folder, overwrite=True)
    assert json.loads((folder / "card.json").read_text())["notes"] == "v2"


def test_save_refuses_a_card_that_does_not_describe_the_module(tmp_path):
    module = build_generator("resnet_6blocks", ngf=2)
    with pytest.raises(CheckpointError, match="missing keys"):
        save_model(module, small_card(), tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


def test_nan_weights_are_neither_saved_nor_loaded(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    module, folder = saved
    with torch.no_grad():
        next(module.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        save_model(module, small_card(), tmp_path / "diverged")
    assert not (tmp_path / "diverged").exists()
    # a file written by another tool (or an older version) is refused when read
    weights = folder / "weights.safetensors"
    state = load_file(str(weights))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("inf"))
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=f"{key}.*NaN or infinite"):
        load_model(folder)


def test_tampered_weights_fail_the_sha256_check(saved):
    _, folder = saved
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(folder, device="cpu")


class _Exploit:
    """Pickles into a call of os.system: running it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "latest_net_G_A.pth"
    payload = {"model.1.weight": torch.zeros(2, 3, 7, 7), "evil": _Exploit(marker)}
    if zip_format:
        torch.save(payload, path)
    else:  # a bare pickle; tensors would be refused before the exploit is reached
        path.write_bytes(pickle.dumps({"evil": _Exploit(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="pickle code execution") as err:
        load_model(path, device="cpu")
    assert "system" in str(err.value)
    assert not marker.exists()
    # the same file would indeed run code if unpickled unsafely: the test is meaningful
    if not zip_format:
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_truncated_pth_is_a_clear_error(tmp_path):
    path = tmp_path / "latest_net_G.pth"
    torch.save(build_generator("resnet_6blocks", ngf=2).state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(path, device="cpu")


def test_truncated_safetensors_is_a_clear_error(saved):
    _, folder = saved
    card = json.loads((folder / "card.json").read_text())
    card["sha256"] = None  # so the truncation, not the digest, is what is caught
    (folder / "card.json").write_text(json.dumps(card))
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(folder, device="cpu")


def test_card_that_mismatches_the_weights_names_keys(saved):
    _, folder = saved
    card = json.loads((folder / "card.json").read_text())
    card["arch_kwargs"]["ngf"] = 4
    card["sha256"] = None
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(
        CheckpointError, match=r"stem.1.weight: expected \(4, 3, 7, 7\), found \(2, 3, 7, 7\)"
    ):
        load_model(folder, device="cpu")


def test_non_tensor_pickle_and_unknown_suffix_are_refused(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="no state dict of tensors"):
        load_model(tmp_path / "meta.pth", device="cpu")
    (tmp_path / "model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        load_model(tmp_path / "model.h5", device="cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        from napari_virtualstain.core.models import read_state_dict

        read_state_dict(tmp_path / "absent.pth")


def test_explicit_arch_overrides_inference(tmp_path):
    torch.manual_seed(0)
    module = build_generator("paper", ngf=2, n_blocks=3, skip=False)
    torch.save(module.state_dict(), tmp_path / "paper.pth")
    inferred = load_model(tmp_path / "paper.pth", device="cpu")
    assert inferred.card.arch_kwargs == {"ngf": 2, "n_blocks": 3, "norm": "instance"}
    assert inferred.module.skip is True  # skip cannot be read from weights: paper default
    explicit = load_model(
        tmp_path / "paper.pth",
        device="cpu",
        arch="paper",
        arch_kwargs={"ngf": 2, "n_blocks": 3, "skip": False},
    )
    assert explicit.module.skip is False


def test_save_can_measure_precision_and_receptive_field(tmp_path):
    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=2, init="xavier")
    card = ModelCard(name="m", arch="resnet_6blocks", arch_kwargs={"ngf": 2}, notes="demo")
    tiles = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    folder = save_model(
        module, card, tmp_path / "m", precision_tiles=tiles, measure_receptive_field=True
    )
    saved = ModelCard.from_json(folder / "card.json")
    assert saved.receptive_field_px == 121
    assert 0 < saved.effective_radius_px < 60
    assert saved.notes.startswith("demo; bf16 vs fp32 on 2 tiles (cpu): mean ")
