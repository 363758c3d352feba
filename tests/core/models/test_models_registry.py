"""Model registry (user folder, package, paths), downloads with sha256, the CLI."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch
from click.testing import CliRunner

from napari_virtualstain.cli import main
from napari_virtualstain.core.models import (
    ModelCard,
    ModelDownloadError,
    ModelNotFoundError,
    build_generator,
    download_file,
    download_model,
    find_model,
    list_models,
    load_model,
    save_model,
    user_models_dir,
)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_MODELS", str(folder))
    folder.mkdir()
    module = build_generator("resnet_6blocks", ngf=2)
    card = ModelCard(name="tiny-he2ki67", arch="resnet_6blocks", arch_kwargs={"ngf": 2}, mpp=0.5)
    save_model(module, card, folder / "tiny")
    torch.save(module.state_dict(), folder / "latest_net_G_A.pth")
    (folder / "notes.txt").write_text("not a model")
    return folder


def test_user_folder_is_overridable(user_dir, monkeypatch):
    assert user_models_dir() == user_dir
    monkeypatch.delenv("NAPARI_VIRTUALSTAIN_MODELS")
    assert user_models_dir().parts[-2:] == (".napari-virtualstain", "models")


def test_list_find_and_load_by_name(user_dir):
    entries = {e.name: e for e in list_models() if e.source == "user"}
    assert set(entries) == {"tiny-he2ki67", "latest_net_G_A"}
    assert entries["tiny-he2ki67"].card.mpp == 0.5
    assert entries["latest_net_G_A"].card is None
    assert find_model("tiny-he2ki67") == user_dir / "tiny"
    assert load_model("tiny-he2ki67", device="cpu").card.arch == "resnet_6blocks"
    assert load_model("latest_net_G_A", device="cpu").card.arch == "resnet_6blocks"
    with pytest.raises(ModelNotFoundError, match="tiny-he2ki67"):
        find_model("nonexistent")


def test_broken_card_is_listed_with_its_error(user_dir):
    (user_dir / "broken").mkdir()
    (user_dir / "broken" / "card.json").write_text('{"name": "x", "arch": "vgg"}')
    broken = [e for e in list_models() if e.path.name == "broken"]
    assert broken and "arch must be one of" in broken[0].error


def test_cli_lists_models(user_dir, tmp_path):
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["tiny-he2ki67"]["arch"] == "resnet_6blocks"
    text = CliRunner().invoke(main, ["models"]).output
    assert str(user_dir) in text and "bare weights" in text
    assert "tiny-he2ki67" in text


def test_download_verifies_sha256_and_never_overwrites(tmp_path):
    source = tmp_path / "remote.safetensors"
    source.write_bytes(b"weights" * 100)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    url = source.as_uri()
    dest = tmp_path / "local" / "w.safetensors"
    assert download_file(url, digest, dest).read_bytes() == source.read_bytes()
    assert download_file(url, digest, dest) == dest  # already there and valid
    with pytest.raises(ModelDownloadError, match="does not match"):
        download_file(url, "0" * 64, tmp_path / "other.safetensors")
    assert not (tmp_path / "other.safetensors").exists()
    assert not list(tmp_path.glob("*.part"))
    dest.write_bytes(b"user edit")
    with pytest.raises(FileExistsError, match="not overwriting"):
        download_file(url, digest, dest)


def test_download_model_installs_a_loadable_model(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_MODELS", str(tmp_path / "models"))
    remote = save_model(
        build_generator("resnet_6blocks", ngf=2),
        ModelCard(name="remote", arch="resnet_6blocks", arch_kwargs={"ngf": 2}),
        tmp_path / "remote",
    )
    card = ModelCard.from_json(remote / "card.json")
    card = ModelCard.from_dict(card.to_dict() | {"url": (remote / "weights.safetensors").as_uri()})
    folder = download_model(card)
    assert folder == tmp_path / "models" / "remote"
    assert load_model("remote", device="cpu").card.url == card.url


def test_download_fails_fast_offline(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ModelDownloadError, match=r"cannot reach models\.invalid.*offline"):
        download_file("https://models.invalid/w.safetensors", "0" * 64, tmp_path / "w.safetensors")
    assert time.perf_counter() - start < 15  # no long hang: .invalid never resolves
    assert not (tmp_path / "w.safetensors").exists()
    with pytest.raises(ModelDownloadError, match="needs both url and sha256"):
        download_model(ModelCard(name="n", arch="paper"), root=tmp_path)


def test_listing_models_does_not_import_torch(user_dir):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from napari_virtualstain.core.models import list_models, ModelCard\n"
        "names = sorted(e.name for e in list_models())\n"
        "print(names, 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")
    assert "tiny-he2ki67" in result.stdout
