"""P-hash on ResNet-18 layer2: hashing behaviour, weight loading and the offline error."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from tests.support import PACKAGE_DATA

torch = pytest.importorskip("torch")

from napari_virtualstain.core.metrics import phash  # noqa: E402
from napari_virtualstain.core.metrics.phash import (  # noqa: E402
    PHasher,
    hash_correlation,
    load_resnet18_layer2,
    phash_similarity,
)

HE = PACKAGE_DATA / "OS-1-detail_HE.ome.tif"


@pytest.fixture(scope="module")
def hasher():
    return PHasher("random")


def test_hash_and_similarity(hasher):
    img = tifffile.imread(HE)
    a, b = img[:128, :128], img[400:528, 400:528]
    noise = np.random.default_rng(0).integers(0, 256, a.shape).astype(np.uint8)
    h = hasher.hash(a)
    assert h.shape == (64,) and h.dtype == bool and 24 <= h.sum() <= 40  # median split
    assert phash_similarity(a, a, hasher=hasher) == 1.0
    # another tissue patch is closer to the patch than uniform noise is
    assert phash_similarity(a, b, hasher=hasher) > phash_similarity(a, noise, hasher=hasher)
    assert hasher.features(a).shape == (128,)
    assert "NOT ImageNet" in hasher.weights_used
    assert hash_correlation(h, ~h) == -1.0


def test_local_weights_file_is_loaded(tmp_path):
    net, _ = load_resnet18_layer2("random")
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)  # a full torchvision file carries more keys
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    loaded, used = load_resnet18_layer2(path)
    assert str(path) in used
    assert torch.equal(loaded.state_dict()["conv1.weight"], state["conv1.weight"])
    torch.save({"conv1.weight": state["conv1.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing"):
        load_resnet18_layer2(tmp_path / "partial.pth")


def test_imagenet_without_file_or_network_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(phash.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(phash, "IMAGENET_URL", (tmp_path / "resnet18-f37072fd.pth").as_uri())
    with pytest.raises(RuntimeError, match="weights are not available"):
        load_resnet18_layer2("imagenet")


def test_environment_variable_names_the_file(tmp_path, monkeypatch):
    net, _ = load_resnet18_layer2("random")
    torch.save(net.state_dict(), tmp_path / "w.pth")
    monkeypatch.setenv(phash.WEIGHTS_ENV, str(tmp_path / "w.pth"))
    _, used = load_resnet18_layer2("imagenet")
    assert str(tmp_path / "w.pth") in used
