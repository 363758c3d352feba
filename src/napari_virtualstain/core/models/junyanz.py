"""ResNet and U-Net generators whose module trees match junyanz pytorch-CycleGAN-and-pix2pix.

The attribute names and ``nn.Sequential`` indices are those of ``models/networks.py`` in that
repository, so ``latest_net_G_A.pth`` / ``latest_net_G.pth`` state dicts load unchanged.
Norm layers with no parameters still occupy their index, exactly as upstream.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

NORMS = ("instance", "batch", "none", "batch_noaffine", "instance_running")


class Identity(nn.Module):
    """Stand-in for ``norm="none"`` (keeps the Sequential indices of upstream)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class RunningInstanceNorm2d(nn.BatchNorm2d):
    """``InstanceNorm2d(affine=False, track_running_stats=True)``, exactly.

    Training normalises each image by its own statistics and updates the running ones; eval
    uses the running statistics (a fixed per-channel affine map), as PyTorch's InstanceNorm
    does. It is a ``BatchNorm2d`` subclass so that per-slide InstanceNorm statistics (see
    ``normstats``) are never swapped in for the statistics the checkpoint carries.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=False, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.instance_norm(
            x, self.running_mean, self.running_var, None, None,
            use_input_stats=self.training, momentum=self.momentum or 0.1, eps=self.eps,
        )  # fmt: skip


def get_norm_layer(norm: str = "instance"):
    """Return a factory ``f(n_channels) -> nn.Module`` for ``norm``.

    Parameters
    ----------
    norm : {"instance", "batch", "none", "batch_noaffine", "instance_running"}
        Instance norm has no affine parameters and no running statistics, as upstream.
        ``batch_noaffine`` is ``BatchNorm2d(affine=False)`` (running statistics only) and
        ``instance_running`` is ``InstanceNorm2d(track_running_stats=True)``: variants that
        edited copies of upstream train, and whose statistics must not be dropped.
    """
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "batch_noaffine":
        return functools.partial(nn.BatchNorm2d, affine=False, track_running_stats=True)
    if norm == "instance_running":
        return RunningInstanceNorm2d
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "none":
        return lambda n_channels: Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _uses_bias(norm: str) -> bool:
    # Upstream gives convolutions a bias only when followed by InstanceNorm (affine=False);
    # with BatchNorm the norm's beta replaces it, and "none" inherits the BatchNorm rule.
    return norm in ("instance", "instance_running")


def reflect_conv(in_nc: int, out_nc: int, kernel: int, norm: str, bias: bool) -> list[nn.Module]:
    """Reflection padding, a ``kernel`` x ``kernel`` convolution that keeps the size, the norm."""
    return [
        nn.ReflectionPad2d(kernel // 2),
        nn.Conv2d(in_nc, out_nc, kernel_size=kernel, padding=0, bias=bias),
        get_norm_layer(norm)(out_nc),
    ]


class ResnetBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions with a residual connection."""

    def __init__(self, dim: int, norm: str, use_dropout: bool) -> None:
        super().__init__()
        bias = _uses_bias(norm)
        block = reflect_conv(dim, dim, 3, norm, bias) + [nn.ReLU(True)]
        if use_dropout:
            block += [nn.Dropout(0.5)]
        block += reflect_conv(dim, dim, 3, norm, bias)
        self.conv_block = nn.Sequential(*block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def resnet_encoder(input_nc: int, ngf: int, norm: str, n_down: int = 2) -> list[nn.Module]:
    """The stem and the stride-2 downsampling convolutions of the ResNet generator."""
    norm_layer = get_norm_layer(norm)
    bias = _uses_bias(norm)
    layers = reflect_conv(input_nc, ngf, 7, norm, bias) + [nn.ReLU(True)]
    for i in range(n_down):
        mult = 2**i
        layers += [
            nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=bias),
            norm_layer(ngf * mult * 2),
            nn.ReLU(True),
        ]
    return layers


def resnet_up(ngf: int, step: int, norm: str, n_down: int = 2) -> list[nn.Module]:
    """One transposed-convolution upsampling step (``step`` counts from the bottleneck)."""
    mult = 2 ** (n_down - step)
    out = ngf * mult // 2
    return [
        nn.ConvTranspose2d(
            ngf * mult, out, 3, stride=2, padding=1, output_padding=1, bias=_uses_bias(norm)
        ),
        get_norm_layer(norm)(out),
        nn.ReLU(True),
    ]


def resnet_head(ngf: int, output_nc: int) -> list[nn.Module]:
    """The final 7x7 convolution and tanh."""
    return [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]


class ResnetGenerator(nn.Module):
    """junyanz ``ResnetGenerator`` (two downsamplings, ``n_blocks`` residual blocks).

    Parameters
    ----------
    input_nc, output_nc : int
        Channels in and out (3 for RGB).
    ngf : int
        Filters of the first convolution.
    norm : {"instance", "batch", "none"}
    use_dropout : bool
        Dropout(0.5) inside each residual block (shifts the ``conv_block`` indices).
    n_blocks : int
        Residual blocks (9 -> ``resnet_9blocks``, 6 -> ``resnet_6blocks``).
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        norm: str = "instance",
        use_dropout: bool = False,
        n_blocks: int = 9,
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        encoder = resnet_encoder(input_nc, ngf, norm)
        layers = encoder[:4]
        for i in range(2):  # each downsampling step is conv, norm, relu
            layers += encoder[4 + 3 * i : 7 + 3 * i] + self.after_step(
                "down", i, ngf * 2 ** (i + 1)
            )
        layers += [ResnetBlock(ngf * 4, norm, use_dropout) for _ in range(n_blocks)]
        for step in range(2):
            layers += resnet_up(ngf, step, norm) + self.after_step(
                "up", step, ngf * 2 ** (1 - step)
            )
        layers += resnet_head(ngf, output_nc)
        self.model = nn.Sequential(*layers)

    def after_step(self, direction: str, step: int, channels: int) -> list[nn.Module]:
        """Modules inserted after down- or upsampling ``step`` (``channels`` wide): none here;
        ``PyramidGenerator`` inserts self-attention."""
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down, the inner levels, up, and concatenation with the input."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        norm_layer = get_norm_layer(norm)
        bias = _uses_bias(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv]
            layers += [norm_layer(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), downconv, norm_layer(inner_nc), submodule]
            layers += [nn.ReLU(True), upconv, norm_layer(outer_nc)]
            if use_dropout:
                layers += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """junyanz ``UnetGenerator``; ``num_downs`` 8 -> ``unet_256``, 7 -> ``unet_128``.

    Dropout sits after the upsampling of the inner levels, so unlike the ResNet it does not
    shift any parameter index and cannot be read back from a checkpoint (it is inactive in
    eval mode anyway).
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(
                ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout
            )
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def is_meta(net: nn.Module) -> bool:
    """Built on the meta device (shapes only): there are no values to initialise, and drawing
    them there imports torch's reference kernels (measured 1.9 s of a 2 s model load)."""
    return any(p.is_meta for p in net.parameters())


def init_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise as upstream ``init_weights`` (``normal``, ``xavier``, ``kaiming``)."""
    if init_type not in ("normal", "xavier", "kaiming"):
        raise ValueError(f"unknown init_type {init_type!r}")
    if is_meta(net):
        return net

    def init_one(m: nn.Module) -> None:
        name = type(m).__name__
        if hasattr(m, "weight") and m.weight is not None and ("Conv" in name or "Linear" in name):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            else:
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif "BatchNorm2d" in name and m.weight is not None:  # affine=False has none
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    with torch.no_grad():
        net.apply(init_one)
    return net
