"""``precision="auto"``: a reduced precision only where it is measured faster than fp32.

Whether bf16 pays depends on the chip, not on the library: with native bf16 (AVX512-BF16,
AMX, recent GPUs) it roughly halves a forward pass; where it is emulated (AVX2-only CPUs) it
is about 120x slower. So the choice is measured once per machine, device, torch version and
architecture, on the model's own layers, and kept in a small JSON file under the user cache
folder (``NAPARI_VIRTUALSTAIN_CACHE`` overrides it).

The measurement cannot stall: first the heaviest convolution alone on a 16 px map (an
emulated bf16 is rejected after one call); then the same layer on a map big enough to time its
arithmetic, interleaved with fp32; and a small whole-model pass as a guard against other
layers that are slow in the reduced precision.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CACHE_FILE = "precision.json"
METHOD = "layer-v5"  # in the key: a changed measurement is not answered from old entries
# The layer comparison runs on a feature map this size (see _time_layer_at_work_size).
LAYER_MAP_PX = 128
# A small whole-model pass may be at most this much slower in the reduced precision ...
MODEL_GUARD = 1.5
# ... on an input this size. At 64 px fixed costs decided: the demo generator's bf16 measured
# 1.2 to 1.7x slower there (over the guard under load, so fp32 was kept and cached) where it is
# x1.1 faster at 128 px and x1.5 to 1.7 at 256 to 512 px; a ResNet-9 pass at 128 px costs
# 0.1 to 0.2 s more than at 64 px.
MODEL_GUARD_PX = 128
# Reduced precision must beat fp32 by this factor on the whole model to be chosen.
MIN_GAIN = 1.1
# The layer probe rejects a reduced precision this many times slower than fp32: emulated bf16
# is ~100x; on a loaded shared machine noise alone reached 6x, so milder differences go to
# the whole-model test.
PROBE_REJECT = 20.0


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` chose, and why (written to provenance, shown in the widget).

    ``fp32_ms`` / ``reduced_ms`` are the model's heaviest layer on a map big enough to time
    its arithmetic (or the 16 px probe's, when the probe already decided).
    """

    precision: str
    reason: str
    candidate: str | None = None
    fp32_ms: float | None = None
    reduced_ms: float | None = None
    machine: str = ""
    cached: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_model() -> str:
    """The CPU's model string (``/proc/cpuinfo`` "model name", else ``platform``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


# CPU flags that decide which reduced-precision and int8 kernels exist (x86 and ARM names).
KERNEL_FLAGS = frozenset({
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_bf16", "amx_int8", "amx_tile", "asimd", "asimdhp", "bf16", "i8mm", "sve",
})  # fmt: skip
# Environment variables that cap the instruction set oneDNN, ATen and fbgemm (int8) use.
ISA_LIMITS = (
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
    "FBGEMM_ENABLE_INSTRUCTIONS",
)


def cpu_features() -> str:
    """What decides which CPU kernels run: the CPU's relevant flags, torch's dispatch level
    and any instruction-set cap set in the environment.

    The model string alone does not: in a cloud VM it may read just "AMD EPYC" on an
    AVX2-only Zen 2 (bf16 emulated, ~120x slower than fp32) and on a Zen 4 with native bf16,
    and a measurement cached on one must not be applied on the other (a home folder shared
    between such nodes, or ``ONEDNN_MAX_CPU_ISA=AVX2``: bf16 measured 470x slower here).
    """
    import torch

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() in ("flags", "features"):
                flags = set(value.split())
                break
    except OSError:
        pass
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    caps = [f"{k}={os.environ[k]}" for k in ISA_LIMITS if os.environ.get(k)]
    return " ".join([capability, *sorted(flags & KERNEL_FLAGS), *caps])


def user_cache_dir() -> Path:
    """``$NAPARI_VIRTUALSTAIN_CACHE``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)/napari-virtualstain."""
    env = os.environ.get("NAPARI_VIRTUALSTAIN_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-virtualstain"


def machine_key(device) -> str:
    """Machine (model string and kernel-relevant features), device and torch version: what
    makes one measurement valid for another run."""
    import torch

    if device.type == "cuda":
        dev = torch.cuda.get_device_name(device)
    else:
        dev = device.type
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    cpu = f"{cpu_model()} [{cpu_features()}]"
    return f"{cpu} | {dev} | threads {threads} | torch {torch.__version__}"


def reduced_candidate(device) -> str | None:
    """The reduced precision worth measuring on ``device`` (None: only fp32 is possible)."""
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    if device.type == "cpu":
        return "bf16"
    return None


def choose_precision(module, device, arch_key: str, stride_px: int = 4, cache_dir=None):
    """Measure (or recall) whether a reduced precision is faster than fp32 for ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        The generator, already on ``device`` (it is only run, never changed).
    arch_key : str
        Names the architecture and its width (the choice is per architecture, not per weight).
    stride_px : int
        Input sides must be multiples of it.
    cache_dir : path, optional
        Where ``precision.json`` lives (default :func:`user_cache_dir`); unwritable is fine.

    Returns
    -------
    PrecisionChoice
    """
    candidate = reduced_candidate(device)
    machine = machine_key(device)
    if candidate is None:
        return PrecisionChoice("fp32", f"no reduced precision on {device.type}", machine=machine)
    path = Path(cache_dir or user_cache_dir()) / CACHE_FILE
    key = f"{machine} | {arch_key} | {METHOD}"
    known = read_cache_json(path).get(key)
    if known is not None:
        return PrecisionChoice(**{**known, "cached": True, "machine": machine})
    choice = _measure(module, device, candidate, stride_px, machine)
    entries = read_cache_json(path)
    entries[key] = {k: v for k, v in choice.to_dict().items() if k not in ("cached", "machine")}
    write_cache_json(path, entries)
    return choice


def _measure(module, device, candidate: str, stride_px: int, machine: str) -> PrecisionChoice:
    from .device import autocast_dtype

    try:
        dtype = autocast_dtype(candidate, device)
    except ValueError as err:
        return PrecisionChoice(
            "fp32", f"{candidate} unavailable: {err}", candidate, machine=machine
        )
    conv = _heaviest_conv(module)
    if conv is not None:
        f_ms, r_ms = _time_layer(conv, device, dtype)
        if r_ms > PROBE_REJECT * f_ms:
            reason = (
                f"{candidate} measured {r_ms / f_ms:.1f}x slower than fp32 on the model's "
                f"heaviest layer ({r_ms:.1f} vs {f_ms:.1f} ms): not native here, fp32 kept"
            )
            return PrecisionChoice("fp32", reason, candidate, f_ms, r_ms, machine)
        # The speed of the bulk of the work: the heaviest layer on a map the size a real
        # tile's deep layers see (a whole-model pass that size costs seconds).
        f_ms, r_ms, map_px = _time_layer_at_work_size(conv, device, dtype)
        where = f"the heaviest layer on a {map_px} px map"
    else:
        f_ms, r_ms = _time_models(module, device, dtype, 128)
        where = "a 128 px pass"
    # The whole model, small, as a guard against other layers that are slow in the reduced
    # precision (small passes are mostly fixed cost, so only a clear loss counts).
    side = -(-MODEL_GUARD_PX // stride_px) * stride_px
    f_model, r_model = _time_models(module, device, dtype, side, rounds=1)
    if r_ms * MIN_GAIN <= f_ms and r_model <= MODEL_GUARD * f_model:
        reason = f"{candidate} measured {f_ms / r_ms:.2f}x faster than fp32 on {where}"
        return PrecisionChoice(candidate, reason, candidate, f_ms, r_ms, machine)
    reason = (
        f"{candidate} not faster than fp32 here ({r_ms:.1f} vs {f_ms:.1f} ms on {where}; "
        f"whole model {r_model:.0f} vs {f_model:.0f} ms at {side} px): fp32 kept"
    )
    return PrecisionChoice("fp32", reason, candidate, f_ms, r_ms, machine)


def _time_layer_at_work_size(conv, device, dtype) -> tuple[float, float, int]:
    """Heaviest conv on a LAYER_MAP_PX map, fp32 and reduced interleaved, best of 3 (ms).

    Reduced-precision kernels lose on small maps (bf16 here: slower at 32 px, x1.07 at 64 px,
    x1.35 at 128 px, x1.7-2.1 on a whole 256 px tile), and the engine's tiles are 500-1400 px,
    whose deep layers see maps of 128 px and more.
    """
    import torch

    side = LAYER_MAP_PX
    x = torch.randn(1, conv.in_channels, side, side, device=device)
    return (*_interleaved_ms(conv, x, device, dtype, rounds=3), side)


def _heaviest_conv(module):
    import torch

    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1]
    if not convs:
        return None
    return max(convs, key=lambda m: m.in_channels * m.out_channels * m.kernel_size[0] ** 2)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_ms(fn, device, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def _time_layer(conv, device, dtype) -> tuple[float, float]:
    """fp32 and reduced, one conv on a 16 px map, interleaved, best of 3 (milliseconds).

    The reduced precision's first call is timed alone: an emulated bf16 (~100x) is rejected
    on it without further calls.
    """
    import torch

    x = torch.randn(1, conv.in_channels, 16, 16, device=device)

    def reduced():
        with torch.autocast(device.type, dtype=dtype):
            conv(x)

    with torch.inference_mode():
        conv(x)
        f_ms = _best_ms(lambda: conv(x), device, 1)
        first = _best_ms(reduced, device, 1)
        if first > 2 * PROBE_REJECT * max(f_ms, 0.05):
            return f_ms, first
        r_ms = first
        for _ in range(3):
            f_ms = min(f_ms, _best_ms(lambda: conv(x), device, 1))
            r_ms = min(r_ms, _best_ms(reduced, device, 1))
    return f_ms, r_ms


def _time_models(module, device, dtype, side: int, rounds: int = 2) -> tuple[float, float]:
    """fp32 and reduced forward passes on a ``side`` px input, interleaved (best of ``rounds``).

    Interleaving makes a burst of load elsewhere on a shared machine hit both alike.
    """
    import torch

    x = torch.rand(1, 3, side, side, device=device) * 2 - 1
    return _interleaved_ms(module, x, device, dtype, rounds)


def _interleaved_ms(module, x, device, dtype, rounds: int) -> tuple[float, float]:
    """Best fp32 and best reduced-precision milliseconds of ``module(x)``, runs alternating."""
    import torch

    def reduced():
        with torch.autocast(device.type, dtype=dtype):
            module(x)

    return _interleaved_pair_ms(lambda: module(x), reduced, device, rounds)


def _interleaved_pair_ms(first, second, device, rounds: int) -> tuple[float, float]:
    """Best milliseconds of two callables, one warm-up each, then runs alternating.

    Interleaving makes a burst of load elsewhere on a shared machine hit both alike.
    """
    import torch

    with torch.inference_mode():
        first()
        second()
        a_ms = b_ms = float("inf")
        for _ in range(rounds):
            a_ms = min(a_ms, _best_ms(first, device, 1))
            b_ms = min(b_ms, _best_ms(second, device, 1))
    return a_ms, b_ms


def read_cache_json(path: Path) -> dict:
    """A user-cache JSON file's entries ({} when missing, unreadable or not a dict)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache_json(path: Path, entries: dict) -> None:
    """Write a user-cache JSON file atomically; an unwritable cache is not an error."""
    from ..io.atomic import write_json_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, entries)
    except OSError:
        pass  # a read-only home costs a re-measurement next time, nothing else


LAYOUT_METHOD = "layout-v1"
LAYOUT_INPUT_PX = 192  # a whole-model pass this size: the layers' own layouts, in seconds
LAYOUT_MIN_GAIN = 1.05


@dataclass(frozen=True)
class LayoutChoice:
    """Whether the generator runs in ``channels_last`` memory format, and why (measured)."""

    channels_last: bool
    reason: str
    cached: bool = False


def choose_memory_format(module, device, precision: str, arch_key: str, stride_px: int = 4,
                         cache_dir=None) -> LayoutChoice:  # fmt: skip
    """Measure (or recall) whether ``channels_last`` runs ``module`` faster on ``device``.

    Whole-model passes on a ``LAYOUT_INPUT_PX`` input, contiguous and channels_last
    interleaved (best of 3), at ``precision``. On a 2-core Zen 4, a lone ResNet-9 pass ran
    x1.14 (fp32) to x1.24 (bf16) faster, but the engine's 960 px tiles only about x1.05;
    other chips and layers differ, hence the measurement. Kept in ``precision.json`` beside
    the precision choice.
    """
    import copy

    import torch

    from .device import autocast_dtype

    if precision == "int8":
        return LayoutChoice(False, "int8 keeps the quantised layout")
    machine = machine_key(device)
    path = Path(cache_dir or user_cache_dir()) / CACHE_FILE
    key = f"{machine} | {arch_key} | {precision} | {LAYOUT_METHOD}"
    known = read_cache_json(path).get(key)
    if isinstance(known, dict) and set(known) == {"channels_last", "reason"}:
        return LayoutChoice(**known, cached=True)
    dtype = autocast_dtype(precision, device)
    side = -(-LAYOUT_INPUT_PX // stride_px) * stride_px
    x = torch.rand(1, 3, side, side, device=device) * 2 - 1
    nhwc = copy.deepcopy(module).to(memory_format=torch.channels_last)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)

    def run(net, inp):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            net(inp)

    plain_ms, nhwc_ms = _interleaved_pair_ms(
        lambda: run(module, x), lambda: run(nhwc, x_nhwc), device, rounds=3
    )
    faster = nhwc_ms * LAYOUT_MIN_GAIN <= plain_ms
    reason = (
        f"channels_last {'used' if faster else 'not used'}: {plain_ms / nhwc_ms:.2f}x the "
        f"contiguous layout on a {side} px {precision} pass ({nhwc_ms:.0f} vs {plain_ms:.0f} ms)"
    )
    entries = read_cache_json(path)
    entries[key] = {"channels_last": faster, "reason": reason}
    write_cache_json(path, entries)
    return LayoutChoice(faster, reason)
