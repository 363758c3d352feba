"""Infer a generator architecture from the keys and shapes of a state dict.

junyanz / BCI checkpoints carry no architecture, and loading one into the wrong network is the
most common failure users report with those repositories. The layout rules (upstream
``networks.py``):

- ResNet: ``model.1`` is the 7x7 stem; residual blocks are ``model.<i>.conv_block``; the second
  block convolution sits at index 5, or 6 when dropout is on (the Dropout shifts it).
- U-Net: nested ``model.model.1.model.3.model.3...``; the nesting depth is ``num_downs``.
- Norm: convolutions have a bias only with instance norm; batch norm has ``.weight`` and
  running statistics; ``none`` has neither.
"""

from __future__ import annotations

import re
from typing import Any

from .build import ARCHITECTURES

_BLOCK = re.compile(r"^model\.(\d+)\.conv_block\.(\d+)\.weight$")
_PAPER_BLOCK = re.compile(r"^blocks\.(\d+)\.conv_block\.1\.weight$")


class ArchitectureError(ValueError):
    """The weights do not match any known layout (message names expected vs found keys)."""


def describe_keys(state_dict: dict, limit: int = 8) -> str:
    """The first ``limit`` keys with their shapes, for error messages."""
    items = [f"{k} {tuple(v.shape)}" for k, v in list(state_dict.items())[:limit]]
    more = len(state_dict) - limit
    return ", ".join(items) + (f", ... (+{more} more)" if more > 0 else "")


def _norm_of(state_dict: dict, conv_key: str, norm_prefix: str) -> str:
    """The norm layer after ``conv_key``, from what the checkpoint holds at ``norm_prefix``.

    Upstream gives a convolution a bias only before InstanceNorm. Running statistics without
    affine weights are BatchNorm(affine=False) after a bias-free convolution and
    InstanceNorm(track_running_stats=True) after a biased one. Affine InstanceNorm is refused,
    naming what was found, rather than loaded as something else.
    """
    has = {s for s in ("weight", "running_mean") if f"{norm_prefix}.{s}" in state_dict}
    if conv_key.replace(".weight", ".bias") in state_dict:
        if "weight" in has:
            raise ArchitectureError(
                f"'{norm_prefix}' holds affine weights after a biased convolution "
                "(InstanceNorm2d(affine=True)); no junyanz generator has that layout"
            )
        return "instance_running" if "running_mean" in has else "instance"
    if "weight" in has:
        return "batch"
    return "batch_noaffine" if "running_mean" in has else "none"


def _infer_resnet(sd: dict) -> tuple[str, dict[str, Any]]:
    stem = sd["model.1.weight"]
    blocks: dict[int, set[int]] = {}
    for key in sd:
        match = _BLOCK.match(key)
        if match and sd[key].ndim == 4:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    if not blocks:
        raise ArchitectureError(
            "ResNet stem 'model.1.weight' found but no residual blocks "
            f"('model.<i>.conv_block.<j>.weight'); found: {describe_keys(sd)}"
        )
    layouts = {frozenset(v) for v in blocks.values()}
    if len(layouts) != 1 or next(iter(layouts)) not in ({1, 5}, {1, 6}):
        found = sorted({tuple(sorted(v)) for v in blocks.values()})
        raise ArchitectureError(
            "residual blocks must have convolutions at conv_block indices (1, 5) without "
            f"dropout or (1, 6) with dropout; found {found}"
        )
    kwargs: dict[str, Any] = {
        "ngf": int(stem.shape[0]),
        "input_nc": int(stem.shape[1]),
        "norm": _norm_of(sd, "model.1.weight", "model.2"),
        "use_dropout": next(iter(layouts)) == {1, 6},
    }
    last = max((k for k in sd if k.endswith(".weight") and sd[k].ndim == 4), key=_index)
    kwargs["output_nc"] = int(sd[last].shape[0])
    n_blocks = len(blocks)
    if any(k.endswith(".query.weight") for k in sd):
        return "pyramid_pix2pix", {**kwargs, "n_blocks": n_blocks, "attention": True}
    names = _names_by("resnet", "n_blocks")
    if n_blocks not in names:
        raise ArchitectureError(
            f"found {n_blocks} residual blocks; junyanz generators have "
            + " or ".join(f"{n} ({name})" for n, name in names.items())
        )
    return names[n_blocks], kwargs


def _names_by(family: str, key: str) -> dict[int, str]:
    """The architecture table's names of ``family``, keyed by the constructor argument ``key``."""
    return {a.fixed_kwargs[key]: a.name for a in ARCHITECTURES.values() if a.family == family}


def _index(key: str) -> int:
    return int(key.split(".")[1])


def _infer_unet(sd: dict) -> tuple[str, dict[str, Any]]:
    # the outermost block holds its submodule at index 1, the inner ones at index 3
    prefix, depth = "model.model.1.model", 1
    while f"{prefix}.1.weight" in sd:
        prefix, depth = f"{prefix}.3.model", depth + 1
    archs = _names_by("unet", "num_downs")
    if depth not in archs:
        known = " and ".join(f"{name} ({n})" for n, name in archs.items())
        raise ArchitectureError(
            f"found a U-Net with {depth} downsamplings; junyanz has {known}; "
            f"found: {describe_keys(sd)}"
        )
    first = sd["model.model.0.weight"]
    norm = _norm_of(sd, "model.model.1.model.1.weight", "model.model.1.model.2")
    outer_up = sd["model.model.3.weight"]
    kwargs = {
        "ngf": int(first.shape[0]),
        "input_nc": int(first.shape[1]),
        "output_nc": int(outer_up.shape[1]),
        "norm": norm,
    }
    return archs[depth], kwargs


def _infer_paper(sd: dict) -> tuple[str, dict[str, Any]]:
    stem = sd["stem.1.weight"]
    n_blocks = len({m[1] for k in sd if (m := _PAPER_BLOCK.match(k))})
    norm = _norm_of(sd, "stem.1.weight", "stem.2")
    return "paper", {"ngf": int(stem.shape[0]), "n_blocks": n_blocks, "norm": norm}


def infer_architecture(state_dict: dict) -> tuple[str, dict[str, Any]]:
    """Return ``(arch, arch_kwargs)`` for ``build_generator`` from a cleaned state dict.

    Dropout of a U-Net cannot be read from its weights (it shifts no index) and is reported
    as off; it does nothing in eval mode. The paper generator's ``skip`` switch changes no
    weight either: it is taken as on (the paper's model) unless a model card says otherwise.

    Raises
    ------
    ArchitectureError
        Naming the expected keys and the keys found.
    """
    if "model.1.weight" in state_dict and state_dict["model.1.weight"].ndim == 4:
        return _infer_resnet(state_dict)
    if "model.model.0.weight" in state_dict:
        return _infer_unet(state_dict)
    if "stem.1.weight" in state_dict:
        return _infer_paper(state_dict)
    raise ArchitectureError(
        "cannot tell the architecture: expected 'model.1.weight' (ResNet stem, shape "
        "(ngf, 3, 7, 7)), 'model.model.0.weight' (U-Net, (ngf, 3, 4, 4)) or 'stem.1.weight' "
        f"(paper generator); found: {describe_keys(state_dict)}"
    )
