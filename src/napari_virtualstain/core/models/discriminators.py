"""PatchGAN discriminator, module tree as junyanz ``NLayerDiscriminator``."""

from __future__ import annotations

import torch
from torch import nn

from .junyanz import _uses_bias, get_norm_layer


class NLayerDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake logits, each seeing a 70x70 patch at ``n_layers=3``.

    Parameters
    ----------
    input_nc : int
        Input channels (6 for a conditional pix2pix discriminator on (A, B) pairs).
    ndf : int
        Filters of the first convolution.
    n_layers : int
        Stride-2 convolutions after the first.
    norm : {"instance", "batch", "none"}
    """

    def __init__(
        self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance"
    ) -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        bias = _uses_bias(norm)
        kw, padw = 4, 1
        seq: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [
                nn.Conv2d(ndf * prev, ndf * mult, kw, stride=2, padding=padw, bias=bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [
            nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=padw, bias=bias),
            norm_layer(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
