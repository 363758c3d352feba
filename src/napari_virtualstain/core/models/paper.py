"""The improved CycleGAN generator of "Virtual IHC based on an improved Cycle-GAN".

288x288x3 in; 7x7 conv (stride 1); three 3x3 stride-2 convolutions with instance norm and
LeakyReLU (288 -> 36, no pooling); ten residual blocks; three 3x3 stride-2 transposed
convolutions back to 288; 7x7 conv and tanh. Skip connections add each encoder stage to the
decoder stage of equal resolution. ``skip=False`` is the plain CycleGAN baseline of the ablation.
"""

from __future__ import annotations

import torch
from torch import nn

from .junyanz import ResnetBlock, get_norm_layer, is_meta, reflect_conv, resnet_head

N_DOWN = 3


def _down(in_ch: int, out_ch: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, bias=norm == "instance"),
        get_norm_layer(norm)(out_ch),
        nn.LeakyReLU(0.2, inplace=True),
    )


def _up(in_ch: int, out_ch: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(
            in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=norm == "instance"
        ),
        get_norm_layer(norm)(out_ch),
        nn.ReLU(inplace=True),
    )


class PaperGenerator(nn.Module):
    """Improved CycleGAN generator (about 50M parameters at ``ngf=64``).

    Parameters
    ----------
    input_nc, output_nc : int
        Channels in and out.
    ngf : int
        Filters of the first convolution; the bottleneck has ``8 * ngf``.
    n_blocks : int
        Residual blocks at the bottleneck (10 in the paper).
    skip : bool
        Additive encoder -> decoder skip connections at equal resolution. Addition (not
        concatenation) keeps the decoder widths, so ``skip=False`` differs only in the skips.
    norm : {"instance", "batch", "none"}
    use_dropout : bool
        Dropout inside the residual blocks.
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 10,
        skip: bool = True,
        norm: str = "instance",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.skip = skip
        self.stem = nn.Sequential(
            *reflect_conv(input_nc, ngf, 7, norm, bias=norm == "instance"),
            nn.LeakyReLU(0.2, inplace=True),
        )
        widths = [ngf * 2**i for i in range(N_DOWN + 1)]  # 64, 128, 256, 512
        self.down = nn.ModuleList(_down(widths[i], widths[i + 1], norm) for i in range(N_DOWN))
        self.blocks = nn.Sequential(
            *(ResnetBlock(widths[-1], norm, use_dropout) for _ in range(n_blocks))
        )
        self.up = nn.ModuleList(
            _up(widths[i + 1], widths[i], norm) for i in reversed(range(N_DOWN))
        )
        self.head = nn.Sequential(*resnet_head(ngf, output_nc))
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        skips = [h]
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        h = self.blocks(h)
        skips.pop()  # the bottleneck itself is the residual path, not a skip
        for layer in self.up:
            h = layer(h)
            if self.skip:
                h = h + skips.pop()
        return self.head(h)


def xavier_init(net: nn.Module) -> nn.Module:
    """Xavier (Glorot) normal weights, zero biases, as the paper states."""
    if is_meta(net):
        return net
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return net
