"""The project's nucleus network: a small U-Net predicting a centre heatmap and a foreground map.

It runs at a fixed pixel size (``NucleusCard.mpp``, 0.5 µm/px for the shipped model) on RGB.
Output channel 0 is the logit of a Gaussian nucleus-centre heatmap, channel 1 the logit of
"inside a nucleus". The card (``nucleus-card.json``) is pure JSON: the architecture, the pixel
size, the post-processing thresholds tuned on a training-side split, the data and the metrics.
It is deliberately not named ``card.json``: the generator registry reads those, and this model is
a segmenter, not a stain generator.

This module imports torch at module level; it is only imported on first use of the learned
segmenter or the nucleus trainer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checks import check_fields

WEIGHTS_NAME = "weights.safetensors"
CARD_NAME = "nucleus-card.json"
CARD_VERSION = 1
HEAT, FOREGROUND = 0, 1


@dataclass(frozen=True)
class NucleusCard:
    """What a nucleus checkpoint is and how to run it.

    Parameters
    ----------
    name : str
        Short unique name (the folder name of the shipped model).
    widths : tuple of int
        Channels per U-Net level, full resolution first.
    mpp : float
        Pixel size (µm/px) the network was trained at; inputs are resampled to it.
    sigma_um : float
        Width of the Gaussian centre heatmap the network was trained on.
    peak_threshold : float
        Minimum heatmap value of a seed (tuned on a training-side split, never on validation).
    min_distance_um : float
        Minimum distance between two seeds.
    foreground_threshold : float
        Probability above which a pixel belongs to a nucleus.
    seed_radius_um : float
        Seeds outside the foreground still get a nucleus of this radius.
    training : dict
        Recipe, data, split and wall time.
    metrics : dict
        Validation metrics (from ``benchmarks/bench_nuclei_accuracy.py``).
    notes : str
        Free text: citations, licences, what it was not validated on.
    """

    name: str
    widths: tuple[int, ...] = (16, 32, 64, 128)
    mpp: float = 0.5
    sigma_um: float = 1.0
    peak_threshold: float = 0.3
    min_distance_um: float = 2.5
    foreground_threshold: float = 0.5
    seed_radius_um: float = 2.0
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty file-safe string, got {self.name!r}")
        if len(self.widths) < 2 or any(int(w) != w or w < 1 for w in self.widths):
            raise ValueError(f"widths must be >= 2 positive integers, got {self.widths}")
        check_fields(self, ("mpp", "sigma_um", "min_distance_um"), "> 0")
        check_fields(self, ("peak_threshold", "foreground_threshold"), "in (0, 1)")

    def to_json(self, path: str | Path | None = None) -> str:
        data = {"card_version": CARD_VERSION, **asdict(self)}
        text = json.dumps(data, indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path: str | Path) -> NucleusCard:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.pop("card_version", CARD_VERSION) > CARD_VERSION:
            raise ValueError(f"{path}: card_version is newer than this plugin supports")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown nucleus-card fields {unknown}")
        data["widths"] = tuple(data.get("widths", cls.widths))
        return cls(**data)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class NucleusUNet(nn.Module):
    """U-Net with ``len(widths) - 1`` downsamplings; input sides must be multiples of 2**that.

    The input is uint8-range RGB as float (0..255); the network scales it itself, so callers
    never have to know a normalisation.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), n_out: int = 2) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.widths = widths
        self.down = nn.ModuleList()
        c_prev = 3
        for w in widths:
            self.down.append(_block(c_prev, w))
            c_prev = w
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w_skip, w_deep in zip(widths[-2::-1], widths[:0:-1], strict=True):
            self.up.append(nn.ConvTranspose2d(w_deep, w_skip, 2, stride=2))
            self.dec.append(_block(2 * w_skip, w_skip))
        self.head = nn.Conv2d(widths[0], n_out, 1)
        with torch.no_grad():  # CenterNet's prior: few pixels are centres, so start the logit low
            self.head.bias[HEAT] = -4.0
        self.pool = nn.MaxPool2d(2)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / 127.5 - 1.0
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_model(module: NucleusUNet, card: NucleusCard, folder: str | Path, fp16: bool) -> Path:
    """Write ``weights.safetensors`` (fp16 or fp32) and ``nucleus-card.json`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
        for k, v in module.state_dict().items()
    }
    save_file(state, str(folder / WEIGHTS_NAME))
    card.to_json(folder / CARD_NAME)
    return folder


def load_model(folder: str | Path) -> tuple[NucleusUNet, NucleusCard]:
    """The network (fp32, eval mode, on the CPU) and card of a model folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    card_path, weights_path = folder / CARD_NAME, folder / WEIGHTS_NAME
    for path in (card_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a nucleus model folder: {path.name} missing")
    card = NucleusCard.from_json(card_path)
    module = NucleusUNet(card.widths)
    try:
        weights = load_file(weights_path)
    except PermissionError:
        raise
    except Exception:  # noqa: BLE001 - SafetensorError, OSError...: not a weights file
        from ..models.checkpoints import unreadable_checkpoint

        raise unreadable_checkpoint(weights_path) from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in weights.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:  # missing / unexpected keys or shapes
        from ..models.checkpoints import CheckpointError

        raise CheckpointError(
            f"{weights_path} does not fit {card_path.name}: these are not the weights of a "
            f"nucleus network with widths {list(card.widths)}"
        ) from err
    return module.eval(), card
