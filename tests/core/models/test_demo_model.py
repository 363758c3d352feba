"""The shipped demo model pair: loads, matches its card's sha256, is small, and stains."""

from __future__ import annotations

import json

import numpy as np
import pytest

NAMES = ("demo-he2ki67", "demo-ki672he")


def demo_folder(name):
    from napari_virtualstain.core.models import package_models_dir

    folder = package_models_dir() / name
    if not (folder / "card.json").is_file():
        pytest.fail(f"the demo model {name} is not shipped in {folder}")
    return folder


@pytest.mark.parametrize("name", NAMES)
def test_demo_model_loads_and_sha256_matches(name):
    from safetensors import safe_open

    from napari_virtualstain.core.models import ModelCard, find_model, load_model, sha256_file

    folder = demo_folder(name)
    card = ModelCard.from_json(folder / "card.json")
    assert card.sha256 == sha256_file(folder / "weights.safetensors")
    assert find_model(name) == folder  # the registry lists it by name
    with safe_open(str(folder / "weights.safetensors"), "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}
    assert dtypes == {"torch.float16"}
    loaded = load_model(name, device="cpu")
    assert loaded.card.direction == ("he->ki67" if name.endswith("he2ki67") else "ki67->he")
    assert "NOT FOR DIAGNOSIS" in card.notes and "OS-2" in card.training_data
    for key in ("ssim", "ms_ssim", "psnr", "mae"):
        assert np.isfinite(card.metrics[f"heldout_he_reconstruction_{key}"])


def test_demo_pair_is_small():
    total = sum(
        (demo_folder(n) / f).stat().st_size
        for n in NAMES
        for f in ("weights.safetensors", "card.json")
    )
    assert total < 10 * 2**20


def test_virtual_ki67_is_pale_with_darker_nuclei(sample_paths):
    """On the OS-1 H&E: background paler than nuclei-rich tissue, and colours differ from H&E."""
    import torch

    from napari_virtualstain.core.io import open_slide
    from napari_virtualstain.core.models import load_model
    from napari_virtualstain.core.models.inference import from_network, to_network

    slide = open_slide(sample_paths["he"])
    he = np.asarray(slide.read_region(0, 0, 0, 512, 512))[::2, ::2][:248, :248]  # ~0.45 µm/px
    module = load_model("demo-he2ki67", device="cpu").module
    with torch.no_grad():
        virtual = from_network(module(to_network(np.ascontiguousarray(he)[None], "cpu")))[0]
    assert virtual.shape == he.shape
    grey_he, grey_v = he.mean(-1), virtual.mean(-1)
    dark = grey_he < np.percentile(grey_he, 20)  # nuclei in the H&E
    assert grey_v[dark].mean() < grey_v[~dark].mean()  # stay darker in the virtual stain
    assert np.abs(virtual.astype(int) - he.astype(int)).mean() > 10  # a different stain


def test_card_metrics_json_is_plain():
    card = json.loads((demo_folder(NAMES[0]) / "card.json").read_text())
    assert card["name"] == "demo-he2ki67" and card["arch"] == "paper"
