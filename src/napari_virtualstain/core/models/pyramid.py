"""Pyramid pix2pix (BCI data set paper) and its self-attention variant.

BCI's Pyramid pix2pix trains a junyanz ``resnet_9blocks`` generator with an extra multi-scale
L1 loss; its checkpoints therefore load into ``PyramidGenerator(attention=False)``, which has
exactly that module tree. ``attention=True`` is the variant of "Generating IHC-stained slices
from HE slices using the BCI dataset": a self-attention layer after each downsampling step
and after each upsampling step. ``gaussian_pyramid`` is the operator of the pyramid loss,
defined here so that training and evaluation share one implementation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .junyanz import ResnetGenerator


class SelfAttention(nn.Module):
    """softmax(Q Kᵀ / √d) V over all pixels, added back through a learned gate.

    Parameters
    ----------
    channels : int
        Feature channels C; queries and keys are projected to ``max(C // 8, 1)``.

    Notes
    -----
    The gate ``gamma`` starts at 0 (as in SAGAN), so an untrained layer is the identity.
    Attention is global: the output of a pixel depends on the whole tile, so models with it
    have no finite receptive field and tile-size-dependent outputs.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        d = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, d, kernel_size=1)
        self.key = nn.Conv2d(channels, d, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, d)
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, C)
        # (a head axis of 1 keeps the layout of multi-head code; it is squeezed below)
        out = chunked_attention(q[:, 0], k[:, 0], v[:, 0], 1.0 / math.sqrt(q.shape[-1]))
        out = out.transpose(1, 2).reshape(b, c, h, w)
        return x + self.gamma * out


def chunked_attention(q, k, v, scale: float, chunk: int = 1024):
    """softmax(q kᵀ · scale) v, a block of queries at a time.

    q and k are (B, N, d), v is (B, N, C) with d != C, which rules out the fused kernels of
    ``scaled_dot_product_attention``; its fallback would hold the whole N x N matrix
    (N = 16384 at 128², 1 GiB in fp32). Blocks of ``chunk`` queries bound that to chunk x N.
    """
    q = q * scale  # scaling q (N x d) is far cheaper than scaling the N x N scores
    kt = k.transpose(1, 2)
    if q.shape[1] <= chunk:
        return torch.softmax(q @ kt, dim=-1) @ v
    blocks = [
        torch.softmax(q[:, i : i + chunk] @ kt, dim=-1) @ v for i in range(0, q.shape[1], chunk)
    ]
    return torch.cat(blocks, dim=1)


class PyramidGenerator(ResnetGenerator):
    """BCI Pyramid pix2pix generator: a junyanz ``ResnetGenerator``, optionally with attention.

    Parameters
    ----------
    input_nc, output_nc, ngf, norm, use_dropout, n_blocks
        As ``ResnetGenerator`` (keywords); BCI uses 9 blocks and instance norm.
    attention : bool
        Insert ``SelfAttention`` after each of the 2 downsampling and 2 upsampling steps.
    full_res_attention : bool
        Keep the attention after the last upsampling step, which runs at full resolution
        (N = 65536 pixels at 256²: about 80 % of the network's cost). False drops only it.
    """

    def __init__(
        self, *, attention: bool = True, full_res_attention: bool = True, **resnet_kwargs
    ) -> None:
        # read by after_step() while ResnetGenerator builds the layers
        self.attention, self.full_res_attention = attention, full_res_attention
        super().__init__(**resnet_kwargs)

    def after_step(self, direction: str, step: int, channels: int) -> list[nn.Module]:
        last_up = direction == "up" and step == 1
        if self.attention and (self.full_res_attention or not last_up):
            return [SelfAttention(channels)]
        return []


def _gaussian_kernel(sigma: float = 1.0, size: int = 3) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def gaussian_blur(x: torch.Tensor, sigma: float = 1.0, size: int = 3) -> torch.Tensor:
    """Depthwise Gaussian blur of an NCHW tensor with reflection padding."""
    c = x.shape[1]
    kernel = _gaussian_kernel(sigma, size).to(x.dtype).to(x.device)
    weight = kernel.expand(c, 1, size, size)
    pad = size // 2
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), weight, groups=c)


def gaussian_pyramid(
    x: torch.Tensor, n_levels: int, blurs_per_octave: int = 4, sigma: float = 1.0
) -> list[torch.Tensor]:
    """Gaussian pyramid as in BCI's Pyramid pix2pix loss.

    Level 0 is ``x``; each next level blurs the previous one ``blurs_per_octave`` times with a
    3x3, sigma-1 Gaussian and keeps every second pixel (the ``blur_pool2d(·, 1, stride=2)``
    of the BCI code).

    Parameters
    ----------
    x : torch.Tensor
        NCHW images.
    n_levels : int
        Number of levels returned, including ``x`` itself.

    Returns
    -------
    list of torch.Tensor
        ``n_levels`` tensors, each half the size of the previous one (rounded up).
    """
    if x.ndim != 4:
        raise ValueError(f"expected an NCHW tensor, got shape {tuple(x.shape)}")
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    levels = [x]
    for _ in range(n_levels - 1):
        h = levels[-1]
        if min(h.shape[-2:]) < 2:
            raise ValueError(f"image too small for {n_levels} pyramid levels: {tuple(x.shape)}")
        for _ in range(blurs_per_octave):
            h = gaussian_blur(h, sigma)
        levels.append(h[..., ::2, ::2])
    return levels
