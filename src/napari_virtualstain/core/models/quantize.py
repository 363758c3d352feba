"""int8 generators for CPU: static post-training quantisation, with its cost in SSIM measured.

An option, never a default: int8 changes the pixels. ``quantize_int8`` calibrates the
activation ranges on tissue tiles of the slide being stained, converts the generator with
PyTorch's FX graph-mode quantisation (fbgemm / x86 kernels, qnnpack on ARM), and then stains a
second, separate set of tiles in fp32 and int8: the SSIM between the two is returned, printed by
the CLI, shown in the widget and written to the provenance.

Measured on a 2-core AMD EPYC (torch 2.13 CPU): a ResNet-9 512 px forward 0.65 s in int8
against 2.18 s in fp32 (3.3x), SSIM 0.967 against fp32 with random weights.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from dataclasses import dataclass

import numpy as np

from .inference import infer_tiles, to_network

# Below this SSIM against fp32 the int8 result is flagged (the CLI and widget say so).
SSIM_WARN = 0.95


@dataclass(frozen=True)
class Int8Report:
    """What quantisation cost: SSIM and grey-level error of int8 vs fp32 on held-out tiles."""

    ssim_vs_fp32: float
    mean_abs_diff: float
    n_calibration_tiles: int
    n_check_tiles: int
    backend: str

    @property
    def statement(self) -> str:
        flag = "" if self.ssim_vs_fp32 >= SSIM_WARN else f" (below {SSIM_WARN}: check the output)"
        return (
            f"int8 ({self.backend}): SSIM {self.ssim_vs_fp32:.3f} vs fp32{flag}, mean "
            f"|diff| {self.mean_abs_diff:.1f} grey levels on {self.n_check_tiles} held-out "
            f"tissue tiles (calibrated on {self.n_calibration_tiles})"
        )

    def to_dict(self) -> dict:
        return {
            "ssim_vs_fp32": round(self.ssim_vs_fp32, 4),
            "mean_abs_diff": round(self.mean_abs_diff, 2),
            "n_calibration_tiles": self.n_calibration_tiles,
            "n_check_tiles": self.n_check_tiles,
            "backend": self.backend,
        }


def int8_backend() -> str:
    """The quantised-kernel backend this torch build has (x86 / fbgemm, else qnnpack).

    Raises
    ------
    ValueError
        When this torch build has no quantised CPU kernels.
    """
    import torch

    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in engines:
            return name
    raise ValueError(f"int8 needs quantised CPU kernels; this torch has {engines}; use fp32")


@dataclass(frozen=True)
class Int8Calibration:
    """What int8 measured on a slide: the activation observers' states and the report.

    Stored next to the tile cache (safetensors + JSON metadata, no pickle), so reopening the
    slide, a resumed run or a dask worker converts the model again in under a second instead
    of calibrating and checking it again (``int8_from_calibration``).
    """

    observers: dict[str, np.ndarray]
    report: Int8Report
    example_px: int

    def save(self, path) -> None:
        import json
        from dataclasses import asdict

        from safetensors.numpy import save_file

        meta = {"report": json.dumps(asdict(self.report)), "example_px": str(self.example_px)}
        save_file({k: np.ascontiguousarray(v) for k, v in self.observers.items()}, str(path),
                  metadata=meta)  # fmt: skip

    @classmethod
    def load(cls, path) -> Int8Calibration:
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            observers = {k: f.get_tensor(k) for k in f.keys()}
        report = Int8Report(**json.loads(meta["report"]))
        return cls(observers, report, int(meta["example_px"]))


# Activation maps at least this many pixels are histogrammed on every other row and column.
SUBSAMPLE_MIN_PX = 64 * 64


@functools.cache  # one class, however many models are prepared
def _subsampled_histogram_observer():
    """PyTorch's HistogramObserver, fed every other row and column of large activation maps.

    Its per-call ``histc`` cost as much as the convolutions themselves while calibrating (0.86
    against 0.96 s over two 256 px ResNet-9 passes, 90 observers a pass). A quarter of the
    positions of a map of at least 64 x 64 gives the same histogram shape; its state (and so a
    stored calibration) is the parent's.
    """
    from torch.ao.quantization.observer import HistogramObserver

    class SubsampledHistogramObserver(HistogramObserver):
        def forward(self, x_orig):
            x = x_orig
            if x.dim() == 4 and x.shape[-2] * x.shape[-1] >= SUBSAMPLE_MIN_PX:
                x = x[..., ::2, ::2]
            super().forward(x)
            return x_orig

    return SubsampledHistogramObserver


def qconfig_mapping(backend: str):
    """The backend's default static-quantisation mapping, its histogram observers subsampled."""
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver

    mapping = get_default_qconfig_mapping(backend)
    default = mapping.global_qconfig
    partial = getattr(default.activation, "p", None)
    if not isinstance(partial, functools.partial) or partial.func is not HistogramObserver:
        return mapping  # another torch's defaults: keep them as they are
    cheaper = QConfig(
        activation=_subsampled_histogram_observer().with_args(**partial.keywords),
        weight=default.weight,
    )
    mapping.set_global(cheaper)
    for key, qconfig in list(mapping.object_type_qconfigs.items()):
        if qconfig is not None and qconfig.activation is default.activation:
            mapping.set_object_type(key, QConfig(cheaper.activation, qconfig.weight))
    return mapping


@contextlib.contextmanager
def _no_stack_traces():
    """FX's quantisation tracer records a Python stack trace per graph node; symbolising them
    took 2 of the 2.8 s of preparing a ResNet-9 here. They only serve FX's error messages."""
    try:
        from torch.fx import config
    except ImportError:  # an older torch: it records them, slower but the same
        config = None
    if not hasattr(config, "do_not_emit_stack_traces"):
        yield
        return
    before = config.do_not_emit_stack_traces
    config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        config.do_not_emit_stack_traces = before


def _prepared(module, example_px: int, normalisation: str):
    """An FX-prepared (observed) float copy of ``module``; FX failures become ValueError."""
    import torch
    from torch.ao.quantization.quantize_fx import prepare_fx

    param = next(module.parameters(), None)
    if param is not None and param.device.type != "cpu":
        raise ValueError(f"int8 runs on the CPU only; the model is on {param.device}")
    backend = int8_backend()
    torch.backends.quantized.engine = backend
    float_module = copy.deepcopy(module).eval()
    for layer in float_module.modules():  # quantised activations have no in-place variant
        if getattr(layer, "inplace", False):
            layer.inplace = False
    example = to_network(np.zeros((1, example_px, example_px, 3), np.uint8), "cpu", normalisation)
    with warnings.catch_warnings(), _no_stack_traces():  # FX's own deprecation notices
        warnings.simplefilter("ignore")
        try:
            return prepare_fx(float_module, qconfig_mapping(backend), example_inputs=(example,))
        except Exception as err:  # noqa: BLE001 - FX raises many kinds; all mean "not this one"
            raise ValueError(
                f"this generator cannot be quantised to int8 ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:160]}); use fp32 or bf16"
            ) from err


def _converted(prepared):
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared)


def calibrate_int8(
    module, calibration_tiles: np.ndarray, check_tiles: np.ndarray, normalisation: str = "[-1,1]"
):
    """Static int8 copy of a float generator, and its measured difference from fp32.

    Parameters
    ----------
    module : torch.nn.Module
        A float CPU generator, with its norms already fixed or folded (see ``normstats``):
        a per-tile InstanceNorm cannot be quantised statically.
    calibration_tiles, check_tiles : np.ndarray
        (N, H, W, 3) uint8 tissue tiles; the first set fixes the activation ranges, the
        second (disjoint) set measures the SSIM.

    Returns
    -------
    (torch.nn.Module, Int8Calibration)

    Raises
    ------
    ValueError
        For a module on an accelerator, no tiles, a torch without quantised kernels, or a
        generator FX cannot quantise (self-attention's data-dependent shapes, for one).
    """
    import torch
    from skimage.metrics import structural_similarity

    if len(calibration_tiles) == 0 or len(check_tiles) == 0:
        raise ValueError("int8 needs tissue tiles to calibrate and to check on; none were given")
    example_px = int(calibration_tiles.shape[1])
    prepared = _prepared(module, example_px, normalisation)
    try:
        with torch.inference_mode():
            for tile in calibration_tiles:
                prepared(to_network(tile[None], "cpu", normalisation))
    except Exception as err:  # noqa: BLE001 - as in _prepared
        raise ValueError(
            f"this generator cannot be quantised to int8 ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]}); use fp32 or bf16"
        ) from err
    observers = {
        k: v.detach().cpu().numpy().copy()
        for k, v in prepared.state_dict().items()
        if "activation_post_process" in k
    }
    quantized = _converted(prepared)
    ref = infer_tiles(module, check_tiles, "cpu", "fp32", normalisation=normalisation)
    low = infer_tiles(quantized, check_tiles, "cpu", "int8", normalisation=normalisation)
    ssims = [
        structural_similarity(a, b, channel_axis=2, data_range=255)
        for a, b in zip(ref, low, strict=True)
    ]
    diffs = np.abs(ref.astype(np.int16) - low.astype(np.int16)).mean(axis=(1, 2, 3))
    report = Int8Report(
        ssim_vs_fp32=float(np.mean(ssims)),
        mean_abs_diff=float(np.mean(diffs)),
        n_calibration_tiles=len(calibration_tiles),
        n_check_tiles=len(check_tiles),
        backend=torch.backends.quantized.engine,
    )
    return quantized, Int8Calibration(observers, report, example_px)


def int8_from_calibration(module, calibration: Int8Calibration, normalisation: str = "[-1,1]"):
    """The int8 copy of ``module`` that ``calibrate_int8`` made, from its stored observers.

    Raises
    ------
    ValueError
        When the observers do not fit this module (another architecture or torch; the
        calibration key, not this check, keeps apart two models of one architecture).
    """
    import torch

    prepared = _prepared(module, calibration.example_px, normalisation)
    state = {k: torch.from_numpy(np.asarray(v)) for k, v in calibration.observers.items()}
    result = prepared.load_state_dict(state, strict=False)
    expected = {k for k in prepared.state_dict() if "activation_post_process" in k}
    if result.unexpected_keys or expected != set(state):
        raise ValueError("the stored int8 calibration does not fit this model; recalibrating")
    return _converted(prepared)


def quantize_int8(
    module, calibration_tiles: np.ndarray, check_tiles: np.ndarray, normalisation: str = "[-1,1]"
):
    """``calibrate_int8`` without the calibration: ``(int8 module, Int8Report)``."""
    quantized, calibration = calibrate_int8(module, calibration_tiles, check_tiles, normalisation)
    return quantized, calibration.report
