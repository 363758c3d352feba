"""The model card: what a checkpoint is, how it was trained and how to feed it.

Pure Python (no torch), so the registry can list models without importing torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .build import GENERATOR_ARCHS

CARD_VERSION = 1
NORMALISATIONS = ("[-1,1]", "[0,1]")
# Sizes a card may ask for: a hostile card must not build a network that never finishes
# (the weights' shapes are checked against the card before anything is allocated).
_INT_KWARGS = {"ngf": (1, 1024), "n_blocks": (0, 64), "input_nc": (1, 16), "output_nc": (1, 16)}
_BOOL_KWARGS = ("use_dropout", "skip", "attention")
# A card's name becomes a folder under the models folder: no separators, no "." or "..".
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DIRECTION = re.compile(r"^[A-Za-z0-9_+\-]+->[A-Za-z0-9_+\-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelCardError(ValueError):
    """A model card is malformed (names the field and what was expected)."""


@dataclass(frozen=True)
class ModelCard:
    """Description of one generator checkpoint.

    Parameters
    ----------
    name : str
        Short unique name, used by the registry (``virtualstain models``).
    arch : str
        Generator architecture, a row of the table ``build.ARCHITECTURES``.
    arch_kwargs : dict
        Keyword arguments of ``build_generator(arch, **arch_kwargs)`` (ngf, norm, ...).
    direction : str
        ``"source->target"`` stain, e.g. ``"he->ki67"`` or ``"ki67->he"``.
    mpp : float or None
        Training resolution in µm/px (None = unknown).
    tile_px : int
        Training tile edge in pixels.
    receptive_field_px : int or None
        Measured receptive field edge in pixels (None = not measured yet).
    normalisation : str
        Input value range the network expects; ``"[-1,1]"`` is the CycleGAN convention.
    training_data : str
        Free text: data set, number of tiles, stain, scanner.
    metrics : dict
        Metric name -> value, when known.
    notes : str
        Free text, e.g. the measured bf16 vs fp32 difference.
    sha256 : str or None
        sha256 of the weights file; checked on load.
    magnification : float or None
        Objective magnification of the training data.
    effective_radius_px : int or None
        Radius holding 99 % of the input-gradient mass (the halo the engine may use).
    url : str or None
        Where the weights can be downloaded (verified against ``sha256``).
    """

    name: str
    arch: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    direction: str = "he->ki67"
    mpp: float | None = None
    tile_px: int = 256
    receptive_field_px: int | None = None
    normalisation: str = "[-1,1]"
    training_data: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    sha256: str | None = None
    magnification: float | None = None
    effective_radius_px: int | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ModelCardError(
                "name must be a folder-safe name (letters, digits, '.', '_', '-', starting with "
                f"a letter or digit, at most 100 characters), got {self.name!r}"
            )
        if self.arch not in GENERATOR_ARCHS:
            raise ModelCardError(f"arch must be one of {GENERATOR_ARCHS}, got {self.arch!r}")
        if not isinstance(self.arch_kwargs, dict):
            raise ModelCardError("arch_kwargs must be a dict")
        _check_arch_kwargs(self.arch_kwargs)
        if not _DIRECTION.match(self.direction):
            raise ModelCardError(
                f"direction must look like 'he->ki67' (source->target), got {self.direction!r}"
            )
        for name in ("mpp", "magnification"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ModelCardError(f"{name} must be > 0 or None, got {value!r}")
        if int(self.tile_px) != self.tile_px or self.tile_px < 8:
            raise ModelCardError(f"tile_px must be an integer >= 8, got {self.tile_px!r}")
        for name in ("receptive_field_px", "effective_radius_px"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 0):
                raise ModelCardError(f"{name} must be a non-negative integer, got {value!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ModelCardError(
                f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"
            )
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ModelCardError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")

    @property
    def source_stain(self) -> str:
        """The input stain, e.g. ``"he"``."""
        return self.direction.split("->")[0]

    @property
    def target_stain(self) -> str:
        """The output stain, e.g. ``"ki67"``."""
        return self.direction.split("->")[1]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, with a format version."""
        return {"card_version": CARD_VERSION, **asdict(self)}

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise; also write to ``path`` when given.

        Returns
        -------
        str
            The JSON text.
        """
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            _write_atomic(Path(path), text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build from a dict, refusing unknown fields (typos would silently be lost)."""
        data = dict(data)
        version = data.pop("card_version", CARD_VERSION)
        if version > CARD_VERSION:
            raise ModelCardError(f"card_version {version} is newer than this plugin supports")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelCardError(
                f"unknown model-card fields {unknown}; expected some of {sorted(known)}"
            )
        missing = [name for name in ("name", "arch") if name not in data]
        if missing:
            raise ModelCardError(f"model card lacks required fields {missing}")
        return cls(**data)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> ModelCard:
        """Parse a card from JSON text or from a ``.json`` file path."""
        text = str(text_or_path)
        source = "text"
        if not text.lstrip().startswith("{"):
            source = str(text_or_path)
            try:
                text = Path(text_or_path).read_text(encoding="utf-8")
            except OSError as err:
                raise ModelCardError(f"cannot read model card {source}: {err}") from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ModelCardError(f"model card {source} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ModelCardError(f"model card {source} must be a JSON object")
        try:
            return cls.from_dict(data)
        except ModelCardError as err:
            if source == "text" or source in str(err):
                raise
            raise ModelCardError(f"model card {source}: {err}") from None


def _write_atomic(path: Path, text: str) -> None:
    """Temporary file beside ``path``, renamed into place (the card never half-written).

    Kept here rather than importing ``core.io.atomic``: listing models must stay light.
    """
    import os
    import tempfile

    from ..filemode import final_mode

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, final_mode(path))  # mkstemp's 0600 would stay otherwise
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _check_arch_kwargs(kwargs: dict) -> None:
    for key, (low, high) in _INT_KWARGS.items():
        value = kwargs.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ModelCardError(
                f"arch_kwargs {key} must be an integer in {low}..{high}, got {value!r}"
            )
    for key in _BOOL_KWARGS:
        if key in kwargs and not isinstance(kwargs[key], bool):
            raise ModelCardError(f"arch_kwargs {key} must be true or false, got {kwargs[key]!r}")
    if "norm" in kwargs and not isinstance(kwargs["norm"], str):
        raise ModelCardError(f"arch_kwargs norm must be a string, got {kwargs['norm']!r}")
