"""``precision="auto"``: a reduced precision only where it is measured faster than fp32.

Whether bf16 pays depends on the chip, not on the library: with native bf16 (AVX512-BF16,
AMX, recent GPUs) it roughly halves a forward pass; where it is emulated (AVX2-only CPUs) it
is about 120x slower. So the choice is measured once per machine, device, torch version and
architecture, on the model's own layers, and kept in a small JSON file under the user cache
folder (``NAPARI_VIRTUALSTAIN_CACHE`` overrides it).

The measurement cannot stall: first the heaviest convolution alone on a small feature map
(milliseconds in fp32); only if the reduced precision is no slower there is the whole model
timed, on a small input. An emulated bf16 is rejected by the layer probe after one call.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CACHE_FILE = "precision.json"
# The whole-model comparison grows its input until one fp32 pass takes this long.
MIN_PASS_MS = 40.0
MAX_SIDE_PX = 256
# The comparison is made for a pass of this side (the engine's tiles are 500-1200 px).
TARGET_SIDE_PX = 768
# Reduced precision must beat fp32 by this factor on the whole model to be chosen.
MIN_GAIN = 1.1
# The layer probe rejects a reduced precision this many times slower than fp32: emulated bf16
# is ~100x; on a loaded shared machine noise alone reached 6x, so milder differences go to
# the whole-model test.
PROBE_REJECT = 20.0


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` chose, and why (written to provenance, shown in the widget).

    ``fp32_ms`` / ``reduced_ms`` are whole-model pass times extrapolated to
    ``TARGET_SIDE_PX`` (or the layer probe's, when the layer probe already decided).
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


def user_cache_dir() -> Path:
    """``$NAPARI_VIRTUALSTAIN_CACHE``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)/napari-virtualstain."""
    env = os.environ.get("NAPARI_VIRTUALSTAIN_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-virtualstain"


def machine_key(device) -> str:
    """Machine, device and torch version: what makes one measurement valid for another run."""
    import torch

    if device.type == "cuda":
        dev = torch.cuda.get_device_name(device)
    else:
        dev = device.type
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return f"{cpu_model()} | {dev} | threads {threads} | torch {torch.__version__}"


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
    key = f"{machine} | {arch_key}"
    known = _read(path).get(key)
    if known is not None:
        return PrecisionChoice(**{**known, "cached": True, "machine": machine})
    choice = _measure(module, device, candidate, stride_px, machine)
    entries = _read(path)
    entries[key] = {k: v for k, v in choice.to_dict().items() if k not in ("cached", "machine")}
    _write(path, entries)
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
    # A pass on a small input is mostly fixed cost (autocast re-casts every weight each call),
    # which a real tile amortises. So time two sizes, fit cost = fixed + per_px * px for each
    # precision, and compare at TARGET_SIDE_PX. The first size grows until an fp32 pass costs
    # MIN_PASS_MS (up to MAX_SIDE_PX / 2).
    side = max(64, -(-64 // stride_px) * stride_px)
    f1, r1 = _time_models(module, device, dtype, side)
    while f1 < MIN_PASS_MS and side * 4 <= MAX_SIDE_PX:
        side *= 2
        f1, r1 = _time_models(module, device, dtype, side)
    f2, r2 = _time_models(module, device, dtype, 2 * side)
    f_ms, r_ms = _at_target(side, f1, f2), _at_target(side, r1, r2)
    at = f"at {TARGET_SIDE_PX} px, from {side} and {2 * side} px passes"
    # Both the extrapolation and the larger real pass must agree: noise on a shared machine
    # can tilt a fitted slope, and a reduced precision slower than fp32 is never chosen.
    if r_ms * MIN_GAIN <= f_ms and r2 * MIN_GAIN <= f2:
        reason = (
            f"{candidate} measured {f_ms / r_ms:.2f}x faster than fp32 on this {device.type} ({at})"
        )
        return PrecisionChoice(candidate, reason, candidate, f_ms, r_ms, machine)
    reason = (
        f"{candidate} not faster than fp32 on this {device.type} "
        f"({r_ms:.0f} vs {f_ms:.0f} ms {at}): fp32 kept"
    )
    return PrecisionChoice("fp32", reason, candidate, f_ms, r_ms, machine)


def _at_target(side: int, t1_ms: float, t2_ms: float) -> float:
    """Extrapolate a pass time to TARGET_SIDE_PX from passes at ``side`` and ``2 * side``."""
    per_px = max(t2_ms - t1_ms, 0.0) / (3 * side * side)  # (2s)^2 - s^2 = 3 s^2
    fixed = max(t1_ms - per_px * side * side, 0.0)
    return fixed + per_px * TARGET_SIDE_PX**2


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

    def reduced():
        with torch.autocast(device.type, dtype=dtype):
            module(x)

    with torch.inference_mode():
        module(x)
        reduced()
        f_ms = r_ms = float("inf")
        for _ in range(rounds):
            f_ms = min(f_ms, _best_ms(lambda: module(x), device, 1))
            r_ms = min(r_ms, _best_ms(reduced, device, 1))
    return f_ms, r_ms


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, entries: dict) -> None:
    from ..io.atomic import write_json_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, entries)
    except OSError:
        pass  # a read-only home costs a re-measurement next time, nothing else
