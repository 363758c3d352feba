"""Where models are found: the user folder, the package, explicit paths; and downloads.

- user folder: ``~/.napari-virtualstain/models``, or ``$NAPARI_VIRTUALSTAIN_MODELS``;
- package: ``napari_virtualstain/data/models``;
- a model is a folder with ``card.json`` (+ ``weights.safetensors``), or a bare ``.pth`` /
  ``.safetensors`` file (architecture inferred on load).

Pure Python: listing models never imports torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from ..filemode import final_mode
from .card import ModelCard, ModelCardError

ENV_VAR = "NAPARI_VIRTUALSTAIN_MODELS"
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


class ModelNotFoundError(LookupError):
    """No model of that name (the message lists the names that exist)."""


class ModelDownloadError(OSError):
    """A download failed: unreachable host, HTTP error or wrong sha256."""


@dataclass(frozen=True)
class RegistryEntry:
    """One model the registry knows about.

    Parameters
    ----------
    name : str
        Card name, or the file stem for bare weights.
    path : Path
        Model folder or weights file.
    source : {"user", "package", "path"}
    card : ModelCard or None
        None for bare weights.
    error : str or None
        Why the card could not be read (the entry is still listed).
    """

    name: str
    path: Path
    source: str
    card: ModelCard | None = None
    error: str | None = None


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def user_models_dir() -> Path:
    """The user models folder (``$NAPARI_VIRTUALSTAIN_MODELS`` or ``~/.napari-virtualstain/models``)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".napari-virtualstain" / "models"


def package_models_dir() -> Path:
    """Models shipped inside the package."""
    return Path(__file__).resolve().parents[2] / "data" / "models"


def _entry(path: Path, source: str) -> RegistryEntry | None:
    card_path = path / "card.json" if path.is_dir() else None
    if card_path is not None and card_path.is_file():
        try:
            card = ModelCard.from_json(card_path)
        except ModelCardError as err:
            return RegistryEntry(path.name, path, source, None, str(err))
        return RegistryEntry(card.name, path, source, card)
    if path.is_file() and path.suffix in _WEIGHT_SUFFIXES:
        sidecar = path.with_suffix(".json")
        card = None
        if sidecar.is_file():
            try:
                card = ModelCard.from_json(sidecar)
            except ModelCardError as err:
                return RegistryEntry(path.stem, path, source, None, str(err))
        return RegistryEntry(card.name if card else path.stem, path, source, card)
    return None


def scan_folder(folder: Path, source: str) -> list[RegistryEntry]:
    """Entries directly inside ``folder`` (missing folder = none)."""
    if not folder.is_dir():
        return []
    entries = (_entry(p, source) for p in sorted(folder.iterdir()))
    return [e for e in entries if e is not None]


def list_models(extra_paths: tuple[str | Path, ...] = ()) -> list[RegistryEntry]:
    """All models: user folder first (it shadows the package), then package, then paths."""
    entries = scan_folder(user_models_dir(), "user") + scan_folder(package_models_dir(), "package")
    for extra in extra_paths:
        entry = _entry(Path(extra).expanduser(), "path")
        if entry is None:
            raise ModelNotFoundError(f"{extra} is neither a model folder nor a weights file")
        entries.append(entry)
    return entries


def find_model(name_or_path: str) -> Path:
    """Resolve an explicit path or a registry name to a model folder or weights file."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    entries = list_models()
    for entry in entries:
        if entry.name == name_or_path or entry.path.name == name_or_path:
            return entry.path
    names = sorted({e.name for e in entries})
    raise ModelNotFoundError(
        f"no model named {name_or_path!r}; known models: {names or 'none'} (folders searched: "
        f"{user_models_dir()} [set ${ENV_VAR} to change], {package_models_dir()})"
    )


def _check_reachable(url: str, timeout_s: float) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelDownloadError(
            f"unsupported model URL {url!r} (expected https://, http://, file://)"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        # Name resolution fails at once offline; connecting bounds the wait by timeout_s.
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise ModelDownloadError(
            f"cannot reach {parts.hostname} to download {url} (offline?): {err}. Download the "
            f"file elsewhere and put it in {user_models_dir()}"
        ) from None


def download_file(url: str, sha256: str, dest: str | Path, timeout_s: float = 10.0) -> Path:
    """Download ``url`` to ``dest``, verifying its sha256; an existing good file is kept.

    The data goes to a temporary file beside ``dest`` and is renamed only when the digest
    matches, so a failed or tampered download never leaves a file that looks valid.

    Raises
    ------
    ModelDownloadError
        Unreachable host (fails within ``timeout_s``), HTTP error, or sha256 mismatch.
    FileExistsError
        ``dest`` exists with different content (it is never overwritten).
    """
    dest = Path(dest)
    if dest.exists():
        if sha256_file(dest) == sha256:
            return dest
        raise FileExistsError(f"{dest} exists with a different sha256; not overwriting it")
    _check_reachable(url, timeout_s)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name, suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ModelDownloadError(
                f"{url}: sha256 {digest.hexdigest()} does not match the expected {sha256}"
            )
        os.chmod(tmp_name, final_mode(dest))  # mkstemp's 0600 would stay otherwise
        shutil.move(tmp_name, dest)
    except (urllib.error.URLError, OSError) as err:
        if isinstance(err, ModelDownloadError):
            raise
        raise ModelDownloadError(f"downloading {url} failed: {err}") from None
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    return dest


def download_model(
    card: ModelCard, root: str | Path | None = None, timeout_s: float = 10.0
) -> Path:
    """Install a model whose card has a ``url`` and ``sha256`` into the user folder.

    Returns
    -------
    Path
        The model folder (``<root>/<card.name>``), loadable with ``load_model``.
    """
    if not card.url or not card.sha256:
        raise ModelDownloadError(f"model card {card.name!r} needs both url and sha256 to download")
    root = Path(root or user_models_dir())
    folder = root / card.name
    if folder.resolve().parent != root.resolve():  # the card's name is validated; belt and braces
        raise ModelDownloadError(f"model name {card.name!r} would install outside {root}")
    download_file(card.url, card.sha256, folder / "weights.safetensors", timeout_s)
    card_path = folder / "card.json"
    if not card_path.exists():
        replace(card).to_json(card_path)
    return folder
