"""The staining engine: batches of uint8 RGB tiles in, uint8 RGB tiles out.

:class:`StainEngine` owns a generator on a device at a precision, optionally with fixed
per-slide InstanceNorm statistics, and backs off on out-of-memory by halving its batch.
:class:`StainConfig` holds the user's choices; :func:`make_plan` turns them, a slide and a
model card into a :class:`StainPlan` (level, resampling, tile / halo / blend, in pixels).
The lazy pyramid (:mod:`.lazy`) and the whole-slide writer (:mod:`.distributed`) drive it.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from dataclasses import replace

import numpy as np

from ..geometry import level_for_mpp, level_mpps
from ..progress import CancelToken
from .config import (  # noqa: F401 - re-exported: the engine's public names
    AUTO_TILE_MAX_PX,
    BLENDS,
    HALO_OVERHEAD,
    NORMS,
    MppUnknownError,
    StainConfig,
    StainPlan,
)

log = logging.getLogger(__name__)


def _is_oom(err: BaseException) -> bool:
    import torch

    if isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError | MemoryError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


# Said where "auto" keeps fp32 on a CPU with int8 kernels: int8 changes pixels, so it is
# offered, never taken. A ResNet-9 512 px pass in int8: x3.1 folded fp32 on the 2-core Zen 4,
# x1.6 with that CPU capped to AVX2 (oneDNN, ATen and fbgemm; docs/engine.md).
INT8_HINT = (
    "; for speed, try --precision int8 (it changes pixels: its SSIM against fp32 is "
    "measured on each slide and printed)"
)


def _has_int8_kernels() -> bool:
    from ..models.quantize import int8_backend

    try:
        int8_backend()
    except ValueError:
        return False
    return True


class StainEngine:
    """A generator ready to stain tiles.

    Parameters
    ----------
    loaded : LoadedModel
        ``module`` and ``card`` from :func:`napari_virtualstain.core.models.load_model`.
    config : StainConfig, optional
    norm_stats : NormStats, optional
        Fixed InstanceNorm statistics; the engine runs a private copy of the module with them.
    on_event : callable, optional
        Called with a message for notable events (out-of-memory back-off).
    """

    def __init__(self, loaded, config: StainConfig | None = None, norm_stats=None, on_event=None):
        from ..models import choose_device

        self.card = loaded.card
        self.config = config or StainConfig()
        self.device = choose_device(self.config.device)
        if self.config.precision == "int8" and self.device.type != "cpu":
            raise ValueError(f"precision int8 runs on the CPU only, not on {self.device}")
        self._base_module = loaded.module.to(self.device).eval()
        self.precision_choice = None
        self.precision, self.precision_reason = self._choose_precision()
        default_batch = 1 if self.device.type == "cpu" else 4
        self.batch_size = self.config.batch_size or default_batch
        self.norm_stats = norm_stats
        self.on_event = on_event or (lambda msg: log.warning(msg))
        self.events: list[str] = []
        self.tiles_inferred = 0
        self.seconds_inferring = 0.0
        self._lock = threading.Lock()
        self.int8_report = None
        self.halo_choice = None  # a HaloChoice once the halo was measured (calibrate)
        self.channels_last = False
        self.layout_reason = "contiguous (no private copy yet)"
        self.module = self._base_module
        if norm_stats is not None:
            self.fix_norm_stats(norm_stats)

    def _choose_precision(self) -> tuple[str, str]:
        """The configured precision, or for "auto" the one measured fastest (see ``precision``)."""
        if self.config.precision != "auto":
            return self.config.precision, "set by the user"
        choice = self.fastest_float_precision()
        self.precision_choice = choice
        reason = "auto: " + choice.reason + (" (cached)" if choice.cached else "")
        if choice.precision == "fp32" and choice.candidate and self.device.type == "cpu":
            reason += INT8_HINT if _has_int8_kernels() else ""
        return choice.precision, reason

    def fastest_float_precision(self):
        """The float precision measured fastest for this model here (what "auto" runs), as a
        ``models.precision.PrecisionChoice``; measured once per machine and cached."""
        from ..models.precision import choose_precision

        kwargs = json.dumps(self.card.arch_kwargs, sort_keys=True)
        return choose_precision(
            self._base_module, self.device, f"{self.card.arch} {kwargs}", self.stride_px
        )

    def fix_norm_stats(self, norm_stats) -> None:
        """From now on run a private copy of the module, with these InstanceNorm statistics.

        The copy has each fixed norm folded into the convolution before it (same pixels,
        fewer passes over the activations; see ``models.normstats.folded_norm_stats``).
        ``norm_stats=None`` keeps the model's norms (a model without InstanceNorm, or ``norm=
        "tile"``). The module runs in ``channels_last`` where that layout is measured faster
        (``models.precision.choose_memory_format``; then always on a private copy); why is in
        ``layout_reason``.
        """
        import copy

        import torch

        from ..models.normstats import folded_norm_stats
        from ..models.precision import choose_memory_format

        module = self._base_module
        if norm_stats is not None:
            module = folded_norm_stats(module, norm_stats)
        kwargs = json.dumps(self.card.arch_kwargs, sort_keys=True)
        layout = choose_memory_format(
            module, self.device, self.precision, f"{self.card.arch} {kwargs}", self.stride_px
        )
        if layout.channels_last:  # on a copy: .to() converts in place
            if module is self._base_module:
                module = copy.deepcopy(module)
            module = module.to(memory_format=torch.channels_last)
        with self._lock:
            self.module = module
            self.norm_stats = norm_stats
            self.channels_last = layout.channels_last
            self.layout_reason = layout.reason + (" (cached)" if layout.cached else "")

    def quantize(self, calibration_tiles: np.ndarray, check_tiles: np.ndarray):
        """For ``precision="int8"``: from now on run a static int8 copy of the module.

        Call after ``fix_norm_stats``. The SSIM of int8 against fp32 on ``check_tiles`` is kept
        in ``int8_report`` and added to ``precision_reason`` (so to the provenance). Returns
        the ``Int8Calibration`` (to store; ``load_int8`` uses it again).
        """
        from ..models.quantize import calibrate_int8

        self._require_int8()
        module, calibration = calibrate_int8(
            self.module, calibration_tiles, check_tiles, self.card.normalisation
        )
        self._use_int8(module, calibration.report, "")
        return calibration

    def load_int8(self, calibration) -> None:
        """``quantize`` from a stored ``Int8Calibration`` (no calibration, no check)."""
        from ..models.quantize import int8_from_calibration

        self._require_int8()
        module = int8_from_calibration(self.module, calibration, self.card.normalisation)
        self._use_int8(module, calibration.report, " (stored calibration of this slide)")

    def _require_int8(self) -> None:
        if self.precision != "int8":
            raise ValueError(f"quantize is for precision int8, this engine runs {self.precision}")

    def _use_int8(self, module, report, note: str) -> None:
        with self._lock:
            self.module = module
            self.int8_report = report
            self.precision_reason = f"{self.precision_reason}; {report.statement}{note}"

    @property
    def stride_px(self) -> int:
        from ..models.build import architecture

        return architecture(self.card.arch).stride_px

    @property
    def seconds_per_tile(self) -> float | None:
        """Measured inference time per tile so far (None before the first tile)."""
        return self.seconds_inferring / self.tiles_inferred if self.tiles_inferred else None

    def stain_batch(self, tiles: np.ndarray, cancel: CancelToken | None = None):
        """(N, H, W, 3) uint8 -> (N, H, W, 3) uint8; H and W multiples of ``stride_px``.

        On out-of-memory the batch is halved and retried (reported through ``on_event``);
        only a single tile that does not fit raises ``MemoryError``.
        """
        from ..models import infer_tiles

        tiles = np.asarray(tiles)
        out = []
        start = 0
        with self._lock:
            while start < len(tiles):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                chunk = tiles[start : start + self.batch_size]
                t0 = time.perf_counter()
                try:
                    y = infer_tiles(
                        self.module,
                        chunk,
                        self.device,
                        self.precision,
                        batch_size=len(chunk),
                        compile=self.config.compile,
                        normalisation=self.card.normalisation,
                        channels_last=self.channels_last,
                    )
                except Exception as err:
                    if not _is_oom(err):
                        raise
                    self._back_off(len(chunk), err)
                    continue
                out.append(y)
                self.seconds_inferring += time.perf_counter() - t0
                self.tiles_inferred += len(chunk)
                start += len(chunk)
        return np.concatenate(out) if out else np.zeros_like(tiles)

    def _back_off(self, n: int, err: BaseException) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if n <= 1:
            raise MemoryError(
                f"one {self.card.name} tile does not fit in memory on {self.device}: {err}; "
                "use a smaller tile_px"
            ) from err
        self.batch_size = max(1, n // 2)
        msg = f"out of memory on {self.device} with batch {n}; retrying with {self.batch_size}"
        self.events.append(msg)
        self.on_event(msg)

    def stain_image(self, rgb: np.ndarray) -> np.ndarray:
        """Whole-image inference in one pass (padded to the stride, cropped back)."""
        h, w = rgb.shape[:2]
        padded = pad_to_multiple(rgb, self.stride_px)
        return self.stain_batch(padded[None])[0, :h, :w]


def make_plan(
    slide, engine: StainEngine, mpp: float | None = None, norm_sha256: str | None = None
) -> StainPlan:
    """Choose the level, resampling and tile geometry for ``slide`` and ``engine``'s model.

    Raises
    ------
    MppUnknownError
        When the model states its mpp but the slide's mpp is unknown and none is given.
    """
    from .tiling import round_up

    card, config = engine.card, engine.config
    level, scale, level_mpp, preview, statement = _choose_level(slide, card, config, mpp)
    m = engine.stride_px
    if card.receptive_field_px:  # stated: self-attention's figure is only a lower bound
        rf, bounded = card.receptive_field_px, not card.arch_kwargs.get("attention", False)
    else:
        rf, bounded = _rf(card)
    model_tile = round_up(config.tile_px or card.tile_px, m)
    crop_halo = round_up(np.ceil(rf / 2), m)
    if not bounded and config.halo_px is None:
        # Self-attention sees the whole input: no halo makes tiles exact, and growing them (up
        # to 1024 px + a whole-input halo) made attention's cost explode: a pix2pix with
        # attention ran for minutes on a 1024 px slide without a tile. Its card's tiles
        # (what it was trained on), cross-faded over a quarter tile, with a say-so.
        config = replace(config, blend="blend", halo_px=round_up(model_tile // 4, m))
        statement += "; self-attention (global context): card tiles cross-faded, not exact"
    if config.halo_px is None:
        mode = "blend" if config.blend == "blend" else "crop"
        radius = card.effective_radius_px or int(np.ceil(rf / 4))
        halo = crop_halo if mode == "crop" else round_up(radius, m)
    else:
        halo = round_up(config.halo_px, m)
        mode = (
            config.blend if config.blend != "auto" else ("crop" if halo >= crop_halo else "blend")
        )
    if config.tile_px is None and config.norm == "slide" and bounded:
        want = 2 * halo / (HALO_OVERHEAD**0.5 - 1)
        model_tile = max(model_tile, round_up(min(want, AUTO_TILE_MAX_PX), m))
    if scale == 1.0:
        tile, halo_src = model_tile, halo
    else:
        tile, halo_src = max(m, round(model_tile / scale)), int(np.ceil(halo / scale))
    blend = 0 if mode == "crop" else max(1, min(halo_src // 2, tile // 2))
    statement += f"; tiles {tile} px + halo {halo_src} px ({mode}"
    statement += f", blend {blend} px)" if blend else ")"
    return StainPlan(
        level=level,
        level_mpp=level_mpp,
        model_mpp=card.mpp,
        scale=scale,
        tile_px=tile,
        halo_px=halo_src,
        blend_px=blend,
        model_tile_px=model_tile,
        card_tile_px=round_up(card.tile_px, m),
        model_halo_px=halo,
        stride_px=m,
        receptive_field_px=int(rf),
        mode=mode,
        preview=preview,
        norm=config.norm,
        norm_sha256=norm_sha256,
        model_sha256=card.sha256,
        statement=statement,
    )


def _rf(card) -> tuple[int, bool]:
    """(receptive field px, bounded) of the card's architecture (unbounded: self-attention)."""
    return _arch_receptive_field(card.arch, json.dumps(card.arch_kwargs, sort_keys=True))


@functools.lru_cache(maxsize=32)
def _arch_receptive_field(arch: str, kwargs_json: str) -> tuple[int, bool]:
    from ..models import arch_receptive_field

    # The support depends on the architecture, not the weights: measured once per process on
    # a width-4 copy.
    field = arch_receptive_field(arch, **json.loads(kwargs_json))
    return int(field.rf_px), bool(field.bounded)


def _choose_level(slide, card, config: StainConfig, mpp: float | None):
    slide_mpp = mpp if mpp is not None else slide.mpp
    ds = slide.downsamples
    mpps = level_mpps(slide_mpp, ds)
    if config.preview_level is not None:
        level = config.preview_level
        if level >= len(ds):
            raise ValueError(f"preview_level {level} but the slide has {len(ds)} levels")
        return (
            level,
            1.0,
            mpps[level],
            True,
            (
                f"PREVIEW: model run on level {level} ({_fmt(mpps[level])}) without resampling; "
                f"the model expects {_fmt(card.mpp)}"
            ),
        )
    if card.mpp is None:
        return 0, 1.0, mpps[0], False, "model card states no mpp: level 0 used as is"
    if slide_mpp is None:
        raise MppUnknownError(
            f"slide {slide.name!r} ({slide.path}) has no pixel size and model {card.name!r} "
            f"was trained at {card.mpp} um/px: give the slide's mpp (CLI: --mpp)"
        )
    tol = config.mpp_tolerance
    level = level_for_mpp(mpps, card.mpp, tol)
    ratio = mpps[level] / card.mpp
    if abs(ratio - 1.0) <= tol:
        return (
            level,
            1.0,
            mpps[level],
            False,
            (f"level {level} ({_fmt(mpps[level])}) matches the model's {_fmt(card.mpp)}"),
        )
    return (
        level,
        float(ratio),
        mpps[level],
        False,
        (
            f"level {level} ({_fmt(mpps[level])}) resampled x{ratio:.3f} to the model's "
            f"{_fmt(card.mpp)}"
        ),
    )


def _fmt(mpp: float | None) -> str:
    return "unknown um/px" if mpp is None else f"{mpp:.4g} um/px"


def pad_to_multiple(rgb: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad the bottom / right of an image so both sides are multiples of ``multiple``."""
    h, w = rgb.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return rgb
    mode = "reflect" if ph < h and pw < w else "symmetric"
    return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode=mode)
