"""Tiny paired / unpaired tile sets for trainer tests (32 px tiles, a known colour transform)."""

from __future__ import annotations

import numpy as np

from napari_virtualstain.core.train.tiles import save_png


def texture(
    seed: int,
    size: int = 48,
    n_blobs: int = 8,
    radius_px: int = 4,
    margin_px: int = 4,
    blob_rgb: tuple[int, int, int] = (80, 50, 130),
    noise: float = 8.0,
) -> np.ndarray:
    """Pink stroma with ``n_blobs`` dark purple discs (centres ``margin_px`` or more from the
    edges) and grey-level noise of std ``noise``: an H&E-like tile."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.empty((size, size, 3), np.float32)
    img[:] = (225, 160, 200)
    for cy, cx in rng.integers(margin_px, size - margin_px, (n_blobs, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < radius_px**2] = blob_rgb
    img += rng.normal(0, noise, (size, size, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def colour_transform(rgb: np.ndarray) -> np.ndarray:
    """A fixed per-pixel colour map (the 'stain' a paired test must learn)."""
    m = np.array([[0.3, 0.5, 0.6], [0.6, 0.4, 0.2], [0.2, 0.2, 0.3]], np.float32)
    return np.clip(rgb.astype(np.float32) @ m + 20, 0, 255).astype(np.uint8)


def write_set(folder, images, prefix):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        paths.append(folder / f"{prefix}{i:02d}.png")
        save_png(paths[-1], img)
    return tuple(paths)
