"""Tiny real generators for tests: a 4-channel ResNet-6 saved with its card, in seconds."""

from __future__ import annotations

from pathlib import Path


def tiny_loaded(name: str, sha256: str, ngf: int = 4, seed: int = 0):
    """An in-memory ``resnet_6blocks`` (xavier init, ``seed``) as a ``LoadedModel``: a 0.25
    um/px, 64 px card with its 117 px receptive field stated."""
    import torch

    from napari_virtualstain.core.models import LoadedModel, ModelCard, build_generator

    torch.manual_seed(seed)
    module = build_generator("resnet_6blocks", ngf=ngf, init="xavier")
    card = ModelCard(name=name, arch="resnet_6blocks", arch_kwargs={"ngf": ngf}, mpp=0.25,
                     tile_px=64, receptive_field_px=117, sha256=sha256)  # fmt: skip
    return LoadedModel(module=module, card=card, path=None)


def write_tiny_generator(
    folder: Path, name: str = "tiny", seed: int = 0, mpp: float = 0.25, tile_px: int = 64, **card
) -> Path:
    """Save a ``resnet_6blocks`` (ngf 4, xavier init, ``seed``) with its card into ``folder/name``."""
    import torch

    from napari_virtualstain.core.models import ModelCard, build_generator, save_model

    torch.manual_seed(seed)
    module = build_generator("resnet_6blocks", ngf=4, init="xavier")
    model_card = ModelCard(name=name, arch="resnet_6blocks", arch_kwargs={"ngf": 4}, mpp=mpp,
                           tile_px=tile_px, receptive_field_px=117, **card)  # fmt: skip
    return save_model(module, model_card, Path(folder) / name)


class TileCounter:
    """Counts tiles through a generator with a forward hook (``n``: tiles seen so far)."""

    def __init__(self, module):
        self.n = 0
        module.register_forward_hook(self)

    def __call__(self, module, args, out):
        self.n += args[0].shape[0]
