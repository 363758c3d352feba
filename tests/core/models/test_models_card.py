"""The model card validates and round-trips through JSON."""

from __future__ import annotations

import pytest

from napari_virtualstain.core.models import ModelCard, ModelCardError


def test_json_round_trip(tmp_path):
    card = ModelCard(
        name="demo",
        arch="resnet_9blocks",
        arch_kwargs={"ngf": 64},
        direction="ki67->he",
        mpp=0.5,
        magnification=20.0,
        tile_px=256,
        receptive_field_px=169,
        effective_radius_px=40,
        training_data="OS-1 / OS-2 crops",
        metrics={"ssim": 0.71},
        notes="bf16 vs fp32: mean 0.4, max 3 grey levels",
        sha256="a" * 64,
        url="https://example.org/demo.safetensors",
    )
    assert ModelCard.from_json(card.to_json()) == card
    card.to_json(tmp_path / "card.json")
    assert ModelCard.from_json(tmp_path / "card.json") == card
    assert (card.source_stain, card.target_stain) == ("ki67", "he")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arch": "vgg"}, "arch must be one of"),
        ({"direction": "he to ki67"}, "direction"),
        ({"mpp": 0}, "mpp must be > 0"),
        ({"tile_px": 4}, "tile_px"),
        ({"normalisation": "0-255"}, "normalisation"),
        ({"sha256": "xyz"}, "sha256"),
        ({"name": "a/b"}, "name"),
        ({"receptive_field_px": -3}, "receptive_field_px"),
    ],
)
def test_invalid_fields_are_named(changes, message):
    with pytest.raises(ModelCardError, match=message):
        ModelCard(**({"name": "m", "arch": "paper"} | changes))


def test_unknown_fields_and_bad_json_are_refused(tmp_path):
    with pytest.raises(ModelCardError, match="unknown model-card fields"):
        ModelCard.from_dict({"name": "m", "arch": "paper", "tile_size": 256})
    with pytest.raises(ModelCardError, match="lacks required"):
        ModelCard.from_dict({"arch": "paper"})
    bad = tmp_path / "card.json"
    bad.write_text("{not json")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        ModelCard.from_json(bad)
