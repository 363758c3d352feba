"""Build generators and discriminators by name."""

from __future__ import annotations

from typing import Any

from .card import GENERATOR_ARCHS

NATIVE_TILE_PX = {
    "paper": 288,
    "resnet_9blocks": 256,
    "resnet_6blocks": 256,
    "unet_256": 256,
    "unet_128": 128,
    "pyramid_pix2pix": 256,
}
# Total stride of each network: tile origins must be multiples of it for seamless tiling.
STRIDE_PX = {
    "paper": 8,
    "resnet_9blocks": 4,
    "resnet_6blocks": 4,
    "unet_256": 256,
    "unet_128": 128,
    "pyramid_pix2pix": 4,
}


def build_generator(arch: str, **kwargs: Any):
    """Build a generator by architecture name.

    Parameters
    ----------
    arch : str
        ``"paper"`` (kwargs: ngf, n_blocks, skip, norm, use_dropout),
        ``"resnet_9blocks"``, ``"resnet_6blocks"``, ``"unet_256"``, ``"unet_128"``
        (kwargs: ngf, norm, use_dropout, input_nc, output_nc) or ``"pyramid_pix2pix"``
        (kwargs as the ResNet plus ``attention``).
    init : str, optional
        ``"normal"`` (junyanz default, gain 0.02), ``"xavier"`` or ``"kaiming"`` for the
        junyanz / pyramid networks; the paper generator always uses Xavier.

    Returns
    -------
    torch.nn.Module
        The generator in eval mode, on the CPU (or the current default device).
    """
    from .junyanz import ResnetGenerator, UnetGenerator, init_weights
    from .paper import PaperGenerator
    from .pyramid import PyramidGenerator

    kwargs = dict(kwargs)
    init = kwargs.pop("init", "normal")
    if arch not in GENERATOR_ARCHS:
        raise ValueError(f"unknown generator arch {arch!r}; expected one of {GENERATOR_ARCHS}")
    try:
        if arch == "paper":
            return PaperGenerator(**kwargs).eval()
        if arch.startswith("resnet_"):
            net = ResnetGenerator(n_blocks=int(arch[7]), **kwargs)
        elif arch.startswith("unet_"):
            kwargs.setdefault("norm", "batch")
            net = UnetGenerator(num_downs=8 if arch == "unet_256" else 7, **kwargs)
        else:
            net = PyramidGenerator(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad keyword arguments for arch {arch!r}: {err}") from err
    return init_weights(net, init).eval()


def build_discriminator(
    input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance", init="normal"
):
    """A PatchGAN discriminator (``n_layers=3``: 70x70 patches), junyanz layout.

    Parameters
    ----------
    input_nc : int
        3 for CycleGAN, 6 for a conditional pix2pix discriminator.
    """
    from .discriminators import NLayerDiscriminator
    from .junyanz import init_weights

    return init_weights(NLayerDiscriminator(input_nc, ndf, n_layers, norm), init)
