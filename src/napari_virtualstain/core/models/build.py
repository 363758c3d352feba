"""Build generators and discriminators by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class GeneratorArch:
    """One generator architecture: everything the package knows about it, in one row.

    Attributes
    ----------
    name : str
        The name cards and ``build_generator`` use (``"resnet_9blocks"``).
    family : str
        The network class: ``"paper"``, ``"resnet"``, ``"unet"`` or ``"pyramid"``.
    native_tile_px : int
        The tile side it is usually trained and benchmarked at.
    stride_px : int
        Total stride: tile origins must be multiples of it for seamless tiling.
    fixed_kwargs : Mapping
        Constructor arguments the name fixes (``n_blocks`` of a ResNet, ``num_downs`` of a
        U-Net); a caller may not override them.
    """

    name: str
    family: str
    native_tile_px: int
    stride_px: int
    fixed_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in ("paper", "resnet", "unet", "pyramid"):
            raise ValueError(f"{self.name}: unknown family {self.family!r}")
        if self.native_tile_px % self.stride_px:
            raise ValueError(f"{self.name}: native_tile_px must be a multiple of stride_px")
        object.__setattr__(self, "fixed_kwargs", MappingProxyType(dict(self.fixed_kwargs)))


#: The one architecture table: cards, the builder, the engine and checkpoint inference read it.
ARCHITECTURES: Mapping[str, GeneratorArch] = MappingProxyType(
    {
        arch.name: arch
        for arch in (
            GeneratorArch("paper", "paper", native_tile_px=288, stride_px=8),
            GeneratorArch("resnet_9blocks", "resnet", 256, 4, {"n_blocks": 9}),
            GeneratorArch("resnet_6blocks", "resnet", 256, 4, {"n_blocks": 6}),
            GeneratorArch("unet_256", "unet", 256, 256, {"num_downs": 8}),
            GeneratorArch("unet_128", "unet", 128, 128, {"num_downs": 7}),
            GeneratorArch("pyramid_pix2pix", "pyramid", native_tile_px=256, stride_px=4),
        )
    }
)
GENERATOR_ARCHS = tuple(ARCHITECTURES)


def architecture(name: str) -> GeneratorArch:
    """The table row of generator ``name`` (``ValueError`` naming the known ones otherwise)."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown generator arch {name!r}; expected one of {GENERATOR_ARCHS}"
        ) from None


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

    spec = architecture(arch)
    kwargs = dict(kwargs)
    init = kwargs.pop("init", "normal")
    if clash := sorted(set(kwargs) & set(spec.fixed_kwargs)):
        raise ValueError(f"bad keyword arguments for arch {arch!r}: {clash} are fixed by its name")
    if spec.family == "unet":
        kwargs.setdefault("norm", "batch")
    cls = {
        "paper": PaperGenerator,
        "resnet": ResnetGenerator,
        "unet": UnetGenerator,
        "pyramid": PyramidGenerator,
    }[spec.family]
    try:
        net = cls(**spec.fixed_kwargs, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad keyword arguments for arch {arch!r}: {err}") from err
    if spec.family == "paper":
        return net.eval()  # initialises itself (Xavier)
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
