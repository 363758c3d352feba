"""StarDist model folders for tests: the real ``2D_versatile_he`` architecture, weights made here.

No pretrained weights can be had offline, so tests use two kinds, both written as a real Keras
``weights_best.h5`` next to the real ``config.json`` / ``thresholds.json``:

- random weights (every layer, every path through the U-Net exercised), and
- *designed* weights: the same architecture set up so that it detects dark discs. The first conv
  computes darkness, 1 - mean(RGB); the next convs blur it along the full-resolution skip path; the
  ``prob`` head is sigmoid(gain * (darkness - threshold)) and every ray of ``dist`` has the
  length ``radius_px``. StarDist on such a network must find each disc once, centred, with the
  known size: a full-path test with an answer known in advance.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HE_CONFIG_DIR = ROOT / "src" / "napari_virtualstain" / "data" / "stardist_2D_versatile_he"
_BLUR = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0


def _new_folder(folder: Path):
    from napari_virtualstain.core.segmentation._stardist_net import (
        StarDistNetConfig,
        build_stardist_unet,
    )

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "thresholds.json"):
        shutil.copy(HE_CONFIG_DIR / name, folder / name)
    return build_stardist_unet(StarDistNetConfig.from_json(folder / "config.json"))


def write_random_model(folder: Path, seed: int = 0, prob_gain: float = 1.0, dist_offset=0.0):
    """The real architecture with torch's random init, saved as ``weights_best.h5``."""
    import torch

    from napari_virtualstain.core.segmentation._stardist_net import save_keras_weights

    torch.manual_seed(seed)
    net = _new_folder(folder)
    with torch.no_grad():
        # Spread the probabilities and lengthen the rays so NMS has real work to do.
        net.convs[-2].weight.mul_(prob_gain)
        net.convs[-1].bias.add_(dist_offset)
    save_keras_weights(net, folder / "weights_best.h5", overwrite=True)
    return folder


def write_disc_model(folder: Path, radius_px: float = 8.0, threshold: float = 0.6, gain=10.0):
    """The real architecture with weights that detect dark discs of ``radius_px`` (model px)."""
    import torch

    from napari_virtualstain.core.segmentation._stardist_net import save_keras_weights

    net = _new_folder(folder)
    specs = net.specs
    with torch.no_grad():
        for i, (conv, (name, c_in, _, k, _)) in enumerate(zip(net.convs, specs, strict=True)):
            conv.weight.zero_()
            conv.bias.zero_()
            if i == 0:
                conv.weight[0, :, k // 2, k // 2] = -1.0 / c_in  # darkness = 1 - mean
                conv.bias[0] = 1.0
            elif name == "prob":
                conv.weight[0, 0, 0, 0] = gain
                conv.bias[0] = -gain * threshold
            elif name == "dist":
                conv.bias[:] = radius_px
            else:
                # Up-level first convs read [upsampled, skip]: take the skip's channel 0, which
                # keeps the full (1/grid) resolution.
                source = specs[i - 1][2] if name and "_no_0" in name and "up_" in name else 0
                conv.weight[0, source] = torch.from_numpy(_BLUR).float()
    save_keras_weights(net, folder / "weights_best.h5", overwrite=True)
    return folder


def disc_image(shape, centres, radius_px: float, seed: int = 0) -> np.ndarray:
    """White (H&E-glass-like) RGB uint8 with dark purple discs at ``centres`` (y, x), plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full((*shape, 3), 235.0)
    for cy, cx in centres:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius_px**2
        img[inside] = (70.0, 40.0, 110.0)
    img += rng.normal(0, 3, img.shape)
    return img.clip(0, 255).astype(np.uint8)
