"""Batch inference: uint8 RGB tiles in, uint8 RGB tiles out.

This is the one place where pixels are mapped to the network range and back.
"""

from __future__ import annotations

import numpy as np

from ..progress import CancelToken, OnProgress, Progress
from .device import autocast_dtype


def to_network(tiles_uint8: np.ndarray, device, normalisation: str = "[-1,1]"):
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 tensor in the network range."""
    import torch

    tiles = np.asarray(tiles_uint8)
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 tiles of shape (N, H, W, 3), got {tiles.dtype} {tiles.shape}"
        )
    x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device).permute(0, 3, 1, 2).float()
    if normalisation == "[-1,1]":
        return x / 127.5 - 1.0
    if normalisation == "[0,1]":
        return x / 255.0
    raise ValueError(f"unknown normalisation {normalisation!r}")


def from_network(y, normalisation: str = "[-1,1]") -> np.ndarray:
    """(N, 3, H, W) tensor in the network range -> (N, H, W, 3) uint8 (rounded, clipped)."""
    import torch

    y = y.float()
    y = (y + 1.0) * 127.5 if normalisation == "[-1,1]" else y * 255.0
    y = y.round_().clamp_(0, 255).to(dtype=torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def is_quantized(module) -> bool:
    """Whether ``module`` holds quantised (int8) layers."""
    return any(".quantized." in type(m).__module__ for m in module.modules())


def compile_module(module):
    """``torch.compile`` a module once; costs ~18 s per tile shape on CPU.

    The compiled wrapper is kept on the module itself (not registered as a submodule), so
    it lives exactly as long as the module.
    """
    import torch

    compiled = module.__dict__.get("_nvs_compiled")
    if compiled is None:
        compiled = torch.compile(module, dynamic=False)
        object.__setattr__(module, "_nvs_compiled", compiled)
    return compiled


def infer_tiles(
    module,
    tiles_uint8: np.ndarray,
    device=None,
    precision: str = "fp32",
    batch_size: int = 4,
    compile: bool = False,
    normalisation: str = "[-1,1]",
    progress: OnProgress | None = None,
    cancel: CancelToken | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Run a generator on a stack of RGB tiles.

    Parameters
    ----------
    module : torch.nn.Module
        The generator (put in eval mode here).
    tiles_uint8 : np.ndarray
        (N, H, W, 3) uint8 RGB tiles.
    device : torch.device or str, optional
        Defaults to the module's device.
    precision : {"fp32", "bf16", "fp16", "int8"}
        Autocast precision; "int8" only for a module quantised by ``models.quantize``.
    batch_size : int
        Tiles per forward pass.
    compile : bool
        Use ``torch.compile`` (not the default: it costs ~18 s per tile shape on CPU).
    normalisation : {"[-1,1]", "[0,1]"}
        Network input / output range (the model card says which).
    progress : callable, optional
        Called with a ``core.progress.Progress`` (tiles done of total) after each batch.
    cancel : CancelToken, optional
        Checked between batches; once cancelled, ``Cancelled`` is raised.
    channels_last : bool
        Feed the input in ``channels_last`` layout (for a module converted to it).

    Returns
    -------
    np.ndarray
        (N, H, W, 3) uint8 RGB.
    """
    import torch

    if device is None:
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    if precision == "int8" and not is_quantized(module):
        raise ValueError("precision int8 needs a quantised module (see models.quantize)")
    module.eval()
    run = compile_module(module) if compile else module
    n = len(tiles_uint8)
    out = []
    with torch.inference_mode():
        for start in range(0, n, max(int(batch_size), 1)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            x = to_network(tiles_uint8[start : start + batch_size], device, normalisation)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                y = run(x)
            out.append(from_network(y, normalisation))
            if progress is not None:
                progress(Progress(min(start + batch_size, n), n, "inference"))
    if not out:
        return np.zeros((0, *np.shape(tiles_uint8)[1:3], 3), np.uint8)
    return np.concatenate(out)


def precision_difference(module, tiles_uint8: np.ndarray, precision: str = "bf16", device=None):
    """Mean and max absolute difference (grey levels) of ``precision`` vs fp32 outputs.

    Returns
    -------
    dict
        ``{"precision", "mean_abs_diff", "max_abs_diff"}``; the model card's notes quote it.
    """
    ref = infer_tiles(module, tiles_uint8, device, "fp32").astype(np.int16)
    low = infer_tiles(module, tiles_uint8, device, precision).astype(np.int16)
    diff = np.abs(ref - low)
    return {
        "precision": precision,
        "mean_abs_diff": float(diff.mean()),
        "max_abs_diff": int(diff.max()),
    }
