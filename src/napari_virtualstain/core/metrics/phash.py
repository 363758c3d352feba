"""Perceptual-hash similarity as in seed 000, on ResNet-18 layer2 features.

Steps: ImageNet-normalise the RGB image, run a ResNet-18 up to its second stage (``layer2``,
128 channels, stride 8), average each channel over space, take the DCT of that channel vector,
keep the ``n_bits`` lowest non-DC coefficients and threshold them at their median (the pHash
recipe). The similarity of two images is the hash correlation ``1 - 2 * hamming / n_bits``, in
[-1, 1]; it equals the Pearson correlation of the two ±1 hashes because median thresholding gives
balanced bits.

The network is defined here with torchvision's parameter names, so torchvision's ImageNet file
``resnet18-f37072fd.pth`` loads into it. Weights come from, in order: an explicit file, the
``NAPARI_VIRTUALSTAIN_RESNET18`` environment variable, torch's hub cache, the normal torchvision
download. ``weights="random"`` is for tests only and says so in ``weights_used``.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
WEIGHTS_ENV = "NAPARI_VIRTUALSTAIN_RESNET18"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _build_resnet18_layer2():
    """ResNet-18 stem, layer1 and layer2 (torchvision names), as a torch module."""
    import torch.nn as nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet18Layer2(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = nn.Sequential(BasicBlock(64, 64, 1), BasicBlock(64, 64, 1))
            self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128, 1))

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            return self.layer2(self.layer1(x))

    return ResNet18Layer2()


def _read_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"ResNet-18 weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _imagenet_state_dict() -> tuple[dict, str]:
    import torch

    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return _read_state_dict(Path(env)), f"ImageNet ResNet-18 from {env} (${WEIGHTS_ENV})"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_URL).name
    if cached.is_file():
        return _read_state_dict(cached), f"ImageNet ResNet-18 (torchvision) from {cached}"
    try:
        state = torch.hub.load_state_dict_from_url(
            IMAGENET_URL, map_location="cpu", check_hash=True, weights_only=True
        )
    except Exception as err:  # offline, proxy, hash mismatch: all end the same way for the user
        raise RuntimeError(
            "ImageNet ResNet-18 weights are not available: no local file and the download of "
            f"{IMAGENET_URL} failed ({err}). Download that file and pass its path, or set "
            f"${WEIGHTS_ENV}."
        ) from err
    return state, f"ImageNet ResNet-18 (torchvision) downloaded from {IMAGENET_URL}"


def load_resnet18_layer2(weights: str | Path = "imagenet"):
    """The layer2 feature extractor in eval mode and a sentence saying which weights it holds."""
    import torch

    if str(weights) == "random":
        torch.manual_seed(0)  # reproducible, so test values do not drift between runs
        model = _build_resnet18_layer2()
        used = "random initialisation (seed 0): NOT ImageNet, values are not comparable to papers"
    else:
        model = _build_resnet18_layer2()
        if str(weights) == "imagenet":
            state, used = _imagenet_state_dict()
        else:
            state, used = _read_state_dict(Path(weights)), f"ResNet-18 weights from {weights}"
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(
                f"{used}: not a torchvision ResNet-18 state dict (missing {missing[:3]}...)"
            )
        model.load_state_dict({k: state[k] for k in own})
    return model.eval(), used


class PHasher:
    """Hashes RGB images; holds the network so that many images cost one model load."""

    def __init__(self, weights: str | Path = "imagenet", n_bits: int = 64):
        if not 8 <= n_bits <= 127:
            raise ValueError(f"n_bits must be in [8, 127] (layer2 has 128 channels), got {n_bits}")
        self.weights, self.n_bits = weights, n_bits

    @cached_property
    def _model(self):
        return load_resnet18_layer2(self.weights)

    @property
    def weights_used(self) -> str:
        return self._model[1]

    def features(self, rgb: np.ndarray) -> np.ndarray:
        """Channel means of layer2 for one (y, x, 3) uint8 image: a (128,) vector."""
        import torch

        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected a (y, x, 3) uint8 RGB image, found {rgb.shape} {rgb.dtype}")
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.inference_mode():
            feats = self._model[0]((x - mean) / std)
        return feats.mean(dim=(2, 3))[0].double().numpy()

    def hash_vector(self, channel_means: np.ndarray) -> np.ndarray:
        """pHash of a channel vector: low-order DCT coefficients above their median."""
        from scipy.fft import dct

        coeffs = dct(np.asarray(channel_means, dtype=np.float64), norm="ortho")[1 : self.n_bits + 1]
        return coeffs > np.median(coeffs)

    def hash(self, rgb: np.ndarray) -> np.ndarray:
        return self.hash_vector(self.features(rgb))


def hash_correlation(hash_a: np.ndarray, hash_b: np.ndarray) -> float:
    """``1 - 2 * hamming / n``: 1 for equal hashes, -1 for complementary ones."""
    hash_a, hash_b = np.asarray(hash_a, bool), np.asarray(hash_b, bool)
    if hash_a.shape != hash_b.shape:
        raise ValueError(f"hashes differ in length: {hash_a.shape} vs {hash_b.shape}")
    return float(1.0 - 2.0 * np.mean(hash_a != hash_b))


def phash_similarity(
    generated: np.ndarray,
    reference: np.ndarray,
    weights: str | Path = "imagenet",
    hasher: PHasher | None = None,
) -> float:
    """Hash correlation between a generated and a reference RGB image (seed 000's P-hash)."""
    hasher = hasher or PHasher(weights)
    return hash_correlation(hasher.hash(generated), hasher.hash(reference))
