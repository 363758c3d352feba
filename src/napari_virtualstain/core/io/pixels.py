"""Bring any supported pixel layout to (y, x, 3) uint8 RGB, lazily, or refuse clearly."""

from __future__ import annotations

import dask.array as da
import numpy as np

from .errors import SlideReadError


def move_channels_last(arr: da.Array, axes: str, path: object) -> da.Array:
    """Reorder an array with tifffile/NGFF-style ``axes`` (e.g. "YXS", "CYX", "TCZYX") to (y, x, c).

    Singleton axes other than Y and X are dropped; a non-singleton axis other than one channel
    axis is refused (time series and z-stacks are not slides).
    """
    axes = axes.upper()
    if "Y" not in axes or "X" not in axes:
        raise SlideReadError(path, f"image has no Y/X axes (axes {axes!r})")
    channel_axes = [i for i, a in enumerate(axes) if a in "SC"]
    other = [i for i, a in enumerate(axes) if a not in "YXSC"]
    for i in other:
        if arr.shape[i] != 1:
            raise SlideReadError(
                path, f"axis {axes[i]!r} has {arr.shape[i]} planes; only 2-D slides are supported"
            )
    nonsingleton_channels = [i for i in channel_axes if arr.shape[i] != 1]
    if len(nonsingleton_channels) > 1:
        raise SlideReadError(path, f"more than one channel axis (axes {axes!r}, {arr.shape})")
    channel = nonsingleton_channels[0] if nonsingleton_channels else None
    order = [axes.index("Y"), axes.index("X")] + ([channel] if channel is not None else [])
    drop = [i for i in range(arr.ndim) if i not in order]
    arr = arr.transpose(order + drop)
    arr = arr.reshape(arr.shape[: len(order)]) if drop else arr
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr


def to_rgb8(
    arr: da.Array, path: object, intensity_max: float | None = None
) -> tuple[da.Array, str]:
    """Convert (y, x, c) to uint8 RGB. Returns the array and a note of what was done ("" if none).

    - 1 channel: grey replicated to RGB.
    - 4 channels: RGBA composited over white (slide background), never shown as premultiplied.
    - uint16: scaled by ``intensity_max`` (the caller estimates it from a small level) so a
      12-bit scan is not shown nearly black.
    - float, signed or other channel counts: refused.
    """
    notes = []
    n_channels = arr.shape[-1]
    if n_channels not in (1, 3, 4):
        raise SlideReadError(
            path,
            f"{n_channels} channels; expected grey, RGB or RGBA brightfield (fluorescence is not supported)",
        )
    if arr.dtype == np.uint16:
        peak = float(intensity_max) if intensity_max else 65535.0
        peak = max(peak, 1.0)
        arr = (arr.astype(np.float32) * (255.0 / peak)).clip(0, 255).round().astype(np.uint8)
        notes.append(f"16-bit data scaled to 8-bit (0..{peak:g} -> 0..255)")
    elif arr.dtype != np.uint8:
        raise SlideReadError(
            path, f"pixel type {arr.dtype} is not supported (uint8 or uint16 only)"
        )
    if n_channels == 1:
        arr = da.concatenate([arr, arr, arr], axis=-1)
        notes.append("greyscale shown as RGB")
    elif n_channels == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        rgb = arr[..., :3].astype(np.float32)
        arr = (rgb * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
        notes.append("RGBA composited over white")
    return arr, "; ".join(notes)


def is_colourless(slide, n_chunks: int = 16, chroma_max: int = 8) -> bool:
    """Whether a slide's tissue has no colour (R = G = B), judged on a bounded sample.

    The sample is the coarsest level stored in the file when it is small, else ``n_chunks``
    of its chunks spread over it, so the cost does not grow with the slide. Only pixels
    darker than glass count; with too few of them the answer is False (cannot tell), never a
    refusal of a slide that is mostly glass. Used where colour carries the measurement.
    """
    import itertools

    levels = list(slide.levels)
    stored = levels[: len(levels) - getattr(slide, "built_levels", 0)] or levels
    level = stored[-1]
    if max(level.shape[:2]) <= 4096:
        step = max(1, max(level.shape[:2]) // 1024)
        samples = [np.asarray(level[::step, ::step, :3].compute())]
    else:
        cy, cx = level.chunksize[:2]
        cells = list(itertools.product(range(0, level.shape[0], cy), range(0, level.shape[1], cx)))
        step = max(1, len(cells) // n_chunks)
        samples = [
            np.asarray(level[y : y + cy, x : x + cx, :3].compute())
            for y, x in cells[::step][:n_chunks]
        ]
    pixels = np.concatenate([t.reshape(-1, 3) for t in samples]).astype(np.int16)
    tissue = pixels[pixels.min(axis=1) < _GLASS_MIN]
    if len(tissue) < 100:
        return False
    chroma = tissue.max(axis=1) - tissue.min(axis=1)
    return float(np.percentile(chroma, 95)) <= chroma_max


_GLASS_MIN = 215  # darker than this in some channel: not glass
