"""Device and precision choice: cuda, then mps, then cpu."""

from __future__ import annotations

# "int8" is a statically quantised CPU module (see ``quantize``): it runs without autocast.
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# What a user may ask for: "auto" picks fp32 or a reduced float precision by measurement
# (``precision.choose_precision``), never int8 (it changes pixels).
PRECISION_CHOICES = ("auto", *PRECISIONS)


def choose_device(preference: str = "auto"):
    """Pick the torch device.

    Parameters
    ----------
    preference : str
        ``"auto"`` (cuda, then mps, then cpu), or an explicit device such as ``"cpu"``,
        ``"cuda"``, ``"cuda:1"`` or ``"mps"``. The environment variable
        ``NAPARI_VIRTUALSTAIN_DEVICE`` overrides ``"auto"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        When an explicit device is requested that this machine does not have.
    """
    import os

    import torch

    if preference == "auto":
        preference = os.environ.get("NAPARI_VIRTUALSTAIN_DEVICE", "auto") or "auto"
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as err:
        raise ValueError(f"unknown device {preference!r} (expected auto, cpu, cuda, mps)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} requested but CUDA is not available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device {preference!r} requested but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {preference!r} requested but MPS is not available")
    return device


def autocast_dtype(precision: str, device):
    """The autocast dtype for ``precision`` on ``device`` (None = run in fp32).

    Raises
    ------
    ValueError
        For an unknown precision, or a reduced precision the device cannot run.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"int8 runs on the CPU only, not on {device}")
    if precision in ("fp32", "int8"):
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"this GPU does not support bf16; use fp16 or fp32 on {device}")
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"autocast is not available on {device.type}; use fp32")
    return dtype


def best_precision(device) -> str:
    """The reduced precision a device can run: bf16 on CPU and recent GPUs, fp16 on older ones.

    A candidate, not a choice: emulated bf16 is ~100x slower than fp32 on CPUs without native
    bf16. ``precision="auto"`` measures it first (:func:`.precision.choose_precision`).
    """
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "bf16"
