"""Checkpoints: norm statistics loaded exactly (or refused by name); hostile cards refused."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from tests.support.badinput import assert_refused, checksums, invoke, write_ki67_tiff
from tests.support.slides import write_slide

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from napari_virtualstain.core.models import load_model  # noqa: E402
from napari_virtualstain.core.models.checkpoints import CheckpointError  # noqa: E402
from napari_virtualstain.core.models.junyanz import ResnetGenerator  # noqa: E402


def _swap_norms(module, make):
    """Replace every norm layer of an upstream-layout ResNet by ``make(channels)``."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm2d | nn.InstanceNorm2d):
                setattr(parent, name, make(child.num_features))
    return module


def _random_stats(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if getattr(m, "running_mean", None) is not None:
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.num_batches_tracked.fill_(1000)
    return module


def _reference(norm_base, make, tmp_path, name):
    torch.manual_seed(0)
    ref = _random_stats(_swap_norms(ResnetGenerator(ngf=8, n_blocks=6, norm=norm_base), make))
    ref.eval()
    path = tmp_path / name
    torch.save(ref.state_dict(), path)  # what an edited copy of upstream train.py saves
    return ref, path


@pytest.mark.parametrize(
    ("norm_base", "make", "expected"),
    [
        ("batch", lambda c: nn.BatchNorm2d(c, affine=False), "batch_noaffine"),
        ("instance", lambda c: nn.InstanceNorm2d(c, track_running_stats=True), "instance_running"),
    ],
)
def test_norm_running_statistics_are_used_exactly(tmp_path, norm_base, make, expected):
    ref, path = _reference(norm_base, make, tmp_path, "latest_net_G_A.pth")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_model(path, device="cpu")
    assert loaded.card.arch_kwargs["norm"] == expected
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        want, got = ref(x), loaded.module(x)
    # statistics dropped would be off by tens of grey levels; exact support matches to fp32
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_affine_instance_norm_is_refused_naming_what_the_checkpoint_holds(tmp_path):
    _, path = _reference("instance", lambda c: nn.InstanceNorm2d(c, affine=True), tmp_path, "g.pth")
    with pytest.raises(CheckpointError, match="InstanceNorm2d\\(affine=True\\)") as err:
        load_model(path, device="cpu")
    assert str(path) in str(err.value)
    slide = write_slide(tmp_path / "he.ome.tif")
    before = checksums(tmp_path)
    res = invoke("stain", slide, "-m", path, "-o", tmp_path / "v.zarr", "--device", "cpu", "-q")
    assert_refused(res, 1, path, "affine")
    assert checksums(tmp_path) == before


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # within the card's bounds but ~7 GB of weights: refused by the shapes, never built
        ({"ngf": 1024}, "expected (1024, 3, 7, 7)"),
        # beyond any real generator: refused when the card is read
        ({"ngf": 100000}, "ngf must be an integer in 1..1024"),
        ({"ngf": -1}, "ngf must be an integer"),
        ({"n_blocks": 10**7}, "n_blocks must be an integer in 0..64"),
    ],
)
def test_a_card_asking_for_a_huge_network_is_refused_before_building(tmp_path, kwargs, expected):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    folder = tmp_path / "huge"
    folder.mkdir()
    small = ResnetGenerator(ngf=4, n_blocks=6)
    save_file({k: v.contiguous() for k, v in small.state_dict().items()},
              str(folder / "weights.safetensors"))  # fmt: skip
    arch = "paper" if "n_blocks" in kwargs else "resnet_6blocks"
    card = {"name": "huge", "arch": arch, "arch_kwargs": kwargs}
    (folder / "card.json").write_text(json.dumps(card))
    slide = write_slide(tmp_path / "he.ome.tif")
    before = checksums(tmp_path)
    res = invoke("stain", slide, "-m", folder, "-o", tmp_path / "v.zarr", "--device", "cpu", "-q")
    assert_refused(res, 1, folder, expected)
    assert checksums(tmp_path) == before


@pytest.mark.parametrize("name", ["..", ".", "../escape", "a/b", ".hidden", ""])
def test_models_download_validates_the_card_name(tmp_path, monkeypatch, name):
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_MODELS", str(models))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    card = tmp_path / "card.json"
    card.write_text(json.dumps({
        "name": name, "arch": "resnet_9blocks", "url": weights.as_uri(),
        "sha256": hashlib.sha256(b"weights").hexdigest(),
    }))  # fmt: skip
    before = checksums(tmp_path)
    res = invoke("models", "download", card)
    assert_refused(res, 1, card, "folder-safe name")
    assert checksums(tmp_path) == before  # nothing written in or outside the models folder


class _Exploit:
    """Pickles into a call of os.system: running it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _not_a_checkpoint(path, kind):
    """Bytes that torch.load fails on in different ways (seed 0: an UnpicklingError)."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save(ResnetGenerator(ngf=2, n_blocks=6).state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(np.random.default_rng(int(kind.removeprefix("random"))).bytes(4096))
    return path


UNREADABLE = "is not a readable checkpoint (corrupt or not a PyTorch/safetensors file)"


def _assert_unreadable(res, path):
    assert_refused(res, 1, f"{path} {UNREADABLE}")
    assert "weights_only" not in res.output and "pickle code" not in res.output


@pytest.mark.parametrize("kind", ["random0", "random17", "empty", "truncated"])
def test_a_pth_that_is_no_checkpoint_is_named_as_such(tmp_path, kind):
    path = _not_a_checkpoint(tmp_path / "latest_net_G.pth", kind)
    with pytest.raises(CheckpointError) as err:
        load_model(path, device="cpu")
    assert str(err.value) == f"{path} {UNREADABLE}"
    slide = write_slide(tmp_path / "he.ome.tif")
    before = checksums(tmp_path)
    res = invoke("stain", slide, "-m", path, "-o", tmp_path / "v.zarr", "--device", "cpu", "-q")
    _assert_unreadable(res, path)
    assert checksums(tmp_path) == before


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_pickle_with_code_is_still_refused_as_such(tmp_path, protocol):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "latest_net_G.pth"
    path.write_bytes(pickle.dumps({"evil": _Exploit(marker)}, protocol=protocol))
    with pytest.raises(CheckpointError, match="needs pickle code execution") as err:
        load_model(path, device="cpu")
    assert str(path) in str(err.value) and "weights_only=False" not in str(err.value)
    assert not marker.exists()


def _nucleus_model_copy(folder):
    import shutil

    from napari_virtualstain.core.segmentation.learned import package_model_dir

    shutil.copytree(package_model_dir(), folder)
    return folder


def test_a_corrupt_nucleus_model_names_its_weights(tmp_path):
    folder = _nucleus_model_copy(tmp_path / "nuclei")
    weights = folder / "weights.safetensors"
    weights.write_bytes(np.random.default_rng(0).bytes(3000))
    image = write_ki67_tiff(tmp_path / "ki67.ome.tif")
    before = checksums(tmp_path)
    res = invoke("segment", image, "--segmenter", "learned", "--model-dir", folder,
                 "--csv", tmp_path / "n.csv", "--quiet")  # fmt: skip
    _assert_unreadable(res, weights)
    assert checksums(tmp_path) == before


def test_nucleus_weights_of_another_network_are_named(tmp_path):
    from safetensors.torch import save_file

    folder = _nucleus_model_copy(tmp_path / "nuclei")
    save_file({"w": torch.zeros(3)}, str(folder / "weights.safetensors"))
    image = write_ki67_tiff(tmp_path / "ki67.ome.tif")
    res = invoke("segment", image, "--segmenter", "learned", "--model-dir", folder,
                 "--csv", tmp_path / "n.csv", "--quiet")  # fmt: skip
    assert_refused(res, 1, folder / "weights.safetensors", "does not fit nucleus-card.json")


@pytest.mark.parametrize("kind", ["random0", "empty", "folder", "other", "code"])
def test_a_bad_cellpose_model_file_is_one_clear_line(tmp_path, kind):
    pytest.importorskip("cellpose")
    models = tmp_path / "cp"
    models.mkdir()
    path = models / "model.pth"
    if kind == "other":  # a PyTorch file, but not a Cellpose network
        torch.save({"w": torch.zeros(3)}, path)
    elif kind == "code":
        import pickle

        path.write_bytes(pickle.dumps(_Exploit(tmp_path / "pwned"), protocol=2))
    else:
        _not_a_checkpoint(path, "empty" if kind == "empty" else "random0")
    image = write_ki67_tiff(tmp_path / "ki67.ome.tif")
    before = checksums(tmp_path)
    given = models if kind == "folder" else path  # --model-dir may name the file's folder
    res = invoke("segment", image, "--segmenter", "cellpose", "--model-dir", given,
                 "--csv", tmp_path / "n.csv", "--quiet")  # fmt: skip
    if kind == "other":
        assert_refused(res, 1, path, "not a Cellpose 3 model")
    elif kind == "code":
        assert_refused(res, 1, path, "needs pickle code execution")
        assert not (tmp_path / "pwned").exists()
    else:
        _assert_unreadable(res, path)
    assert checksums(tmp_path) == before
