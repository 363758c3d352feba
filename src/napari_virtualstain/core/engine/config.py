"""What a staining run is asked for (``StainConfig``) and how it will run (``StainPlan``).

``StainConfig`` holds the user's choices, validated; ``make_plan`` in :mod:`.stain` turns them,
a slide and a model card into a ``StainPlan`` (level, resampling, tile / halo / blend, in pixels).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from ..models.device import PRECISION_CHOICES
from .tissue import TissueConfig

BLENDS = ("auto", "crop", "blend")
# Default tiles grow until the context (halo) is at most this share of the computed pixels:
# (tile + 2 halo)^2 <= HALO_OVERHEAD * tile^2, up to AUTO_TILE_MAX_PX. A ResNet-9's 88 px halo
# on its 256 px card tile meant 2.85x the pixels per output pixel (slower than a naive loop
# even in bf16); 784 px tiles bring it to 1.5x.
HALO_OVERHEAD = 1.5
AUTO_TILE_MAX_PX = 1024
NORMS = ("slide", "tile")


class MppUnknownError(ValueError):
    """The slide's pixel size is unknown and the model needs it."""


@dataclass(frozen=True)
class StainConfig:
    """How to stain. ``None`` means "from the model card / receptive field".

    Parameters
    ----------
    device : str
        "auto", "cpu", "cuda", "cuda:1", "mps".
    precision : str
        "auto" (a reduced precision only where measured faster than fp32 on this device,
        see :mod:`..models.precision`), "fp32", "bf16", "fp16", or "int8" (CPU only; statically
        quantised on this slide's tissue, SSIM vs fp32 measured, see :mod:`..models.quantize`).
    batch_size : int, optional
        Tiles per forward pass (halved automatically on out-of-memory). Default 1 on CPU
        (measured: batches of large tiles run slower on few cores) and 4 on accelerators.
    tile_px : int, optional
        Core tile side at the model's resolution. Default the card's ``tile_px``, enlarged
        (up to ``AUTO_TILE_MAX_PX``) until the halo adds at most ``HALO_OVERHEAD`` of the
        pixels, when the per-slide normalisation makes the output independent of tile size.
    halo_px : int, optional
        Context per side at the model's resolution; default half the receptive field
        (centre-crop, exact) or the card's effective radius (blend).
    blend : {"auto", "crop", "blend"}
        "crop" keeps each tile's core; "blend" cross-fades neighbours over ``halo_px / 2``.
        "auto" crops when the halo covers the receptive field, else blends.
    norm : {"slide", "tile"}
        "slide": InstanceNorm statistics gathered once per slide (tiles are then seam-free
        and identical however they are batched); "tile": each tile normalised by itself.
    norm_tiles : int
        How many tissue tiles the per-slide statistics are gathered from.
    compile : bool
        ``torch.compile`` the generator (slow first call; faster afterwards).
    tissue : TissueConfig or None
        Tissue detection; None stains every tile.
    background_rgb : tuple of int, optional
        Colour painted on background tiles (never sent to the generator). Default: the
        model's own glass colour, measured once per model and slide (no step where a stained
        tile meets a background tile).
    mpp_tolerance : float
        Relative mpp mismatch accepted without resampling.
    preview_level : int, optional
        Run the model on this (coarser) level at the wrong magnification: a labelled preview.
    """

    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    tile_px: int | None = None
    halo_px: int | None = None
    blend: str = "auto"
    norm: str = "slide"
    norm_tiles: int = 8
    compile: bool = False
    tissue: TissueConfig | None = field(default_factory=TissueConfig)
    background_rgb: tuple[int, int, int] | None = None
    mpp_tolerance: float = 0.1
    preview_level: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(
                f"precision must be one of {PRECISION_CHOICES}, got {self.precision!r}"
            )
        if self.precision == "int8" and self.norm != "slide":
            raise ValueError(
                "precision int8 needs norm='slide' (per-tile norms cannot be quantised)"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.tile_px is not None and self.tile_px < 8:
            raise ValueError(f"tile_px must be >= 8, got {self.tile_px}")
        if self.halo_px is not None and self.halo_px < 0:
            raise ValueError(f"halo_px must be >= 0, got {self.halo_px}")
        if self.blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, got {self.blend!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        bg = self.background_rgb
        if bg is not None and (len(bg) != 3 or not all(0 <= v <= 255 for v in bg)):
            raise ValueError(
                f"background_rgb must be 3 values in 0..255, got {self.background_rgb}"
            )
        if not 0 <= self.mpp_tolerance < 1:
            raise ValueError(f"mpp_tolerance must be in [0, 1), got {self.mpp_tolerance}")
        if self.preview_level is not None and self.preview_level < 0:
            raise ValueError(f"preview_level must be >= 0, got {self.preview_level}")


@dataclass(frozen=True)
class StainPlan:
    """Where and how tiles are cut and run, in source-level pixels.

    ``scale`` is model px per source px (1.0 = no resampling). ``tile_px`` / ``halo_px`` /
    ``blend_px`` are on the source level ``level``; ``model_*`` at the model's resolution.
    """

    level: int
    level_mpp: float | None
    model_mpp: float | None
    scale: float
    tile_px: int
    halo_px: int
    blend_px: int
    model_tile_px: int
    model_halo_px: int
    card_tile_px: int
    stride_px: int
    receptive_field_px: int
    mode: str
    preview: bool
    norm: str
    norm_sha256: str | None
    model_sha256: str | None
    statement: str

    @property
    def resampled(self) -> bool:
        return self.scale != 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    def namespace(
        self, slide_identity: str, background_rgb=(255, 255, 255), precision: str = "fp32"
    ) -> str:
        """Cache namespace: every input that changes a tile's pixels."""
        parts = {k: v for k, v in self.to_dict().items() if k != "statement"}
        parts["slide"] = slide_identity
        parts["precision"] = precision
        parts["background_rgb"] = list(background_rgb)
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
