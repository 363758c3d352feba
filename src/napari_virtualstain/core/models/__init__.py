"""Generators, discriminators, checkpoints, registry, device and tiled-inference helpers.

Names are resolved lazily (PEP 562): ``import napari_virtualstain.core.models`` does not import
torch; the first use of a torch-backed name does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "build": (
        "build_generator",
        "build_discriminator",
        "architecture",
        "ARCHITECTURES",
        "GENERATOR_ARCHS",
        "GeneratorArch",
    ),
    "card": ("ModelCard", "ModelCardError"),
    "checkpoints": (
        "save_model",
        "load_model",
        "LoadedModel",
        "CheckpointError",
        "read_state_dict",
        "sha256_file",
    ),
    "infer_arch": ("infer_architecture", "ArchitectureError"),
    "device": ("choose_device", "best_precision", "PRECISIONS"),
    "inference": ("infer_tiles", "precision_difference", "compile_module"),
    "normstats": ("NormStats", "collect_norm_stats", "fixed_norm_stats"),
    "receptive": (
        "receptive_field_px",
        "effective_radius_px",
        "measure_receptive_field",
        "arch_receptive_field",
        "ReceptiveField",
    ),
    "pyramid": ("gaussian_pyramid", "SelfAttention"),
    "registry": (
        "list_models",
        "find_model",
        "download_model",
        "download_file",
        "user_models_dir",
        "package_models_dir",
        "ModelNotFoundError",
        "ModelDownloadError",
        "RegistryEntry",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = [
    "ARCHITECTURES",
    "ArchitectureError",
    "CheckpointError",
    "GENERATOR_ARCHS",
    "GeneratorArch",
    "LoadedModel",
    "ModelCard",
    "ModelCardError",
    "ModelDownloadError",
    "ModelNotFoundError",
    "NormStats",
    "PRECISIONS",
    "ReceptiveField",
    "RegistryEntry",
    "SelfAttention",
    "arch_receptive_field",
    "architecture",
    "best_precision",
    "build_discriminator",
    "build_generator",
    "choose_device",
    "collect_norm_stats",
    "compile_module",
    "download_file",
    "download_model",
    "effective_radius_px",
    "find_model",
    "fixed_norm_stats",
    "gaussian_pyramid",
    "infer_architecture",
    "infer_tiles",
    "list_models",
    "load_model",
    "measure_receptive_field",
    "package_models_dir",
    "precision_difference",
    "read_state_dict",
    "receptive_field_px",
    "save_model",
    "sha256_file",
    "user_models_dir",
]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .build import (
        ARCHITECTURES,
        GENERATOR_ARCHS,
        GeneratorArch,
        architecture,
        build_discriminator,
        build_generator,
    )
    from .card import ModelCard, ModelCardError
    from .checkpoints import (
        CheckpointError,
        LoadedModel,
        load_model,
        read_state_dict,
        save_model,
        sha256_file,
    )
    from .device import PRECISIONS, best_precision, choose_device
    from .infer_arch import ArchitectureError, infer_architecture
    from .inference import compile_module, infer_tiles, precision_difference
    from .normstats import NormStats, collect_norm_stats, fixed_norm_stats
    from .pyramid import SelfAttention, gaussian_pyramid
    from .receptive import (
        ReceptiveField,
        arch_receptive_field,
        effective_radius_px,
        measure_receptive_field,
        receptive_field_px,
    )
    from .registry import (
        ModelDownloadError,
        ModelNotFoundError,
        RegistryEntry,
        download_file,
        download_model,
        find_model,
        list_models,
        package_models_dir,
        user_models_dir,
    )
