"""Empirical receptive field: the gradient of one centre output pixel w.r.t. the input.

With per-tile InstanceNorm every output pixel depends on every input pixel (through the
statistics), so the measurement runs with fixed statistics (see ``normstats``); what remains
is the convolutional receptive field. Two figures come out:

- ``rf_px`` / ``radius_px``: the box where the gradient is non-zero (the exact support) and
  the farthest input pixel from the output pixel; ``radius_px`` is the halo for exact tiling;
- ``effective_radius_px``: the Chebyshev radius around the centre that holds ``mass``
  (default 99 %) of the absolute gradient. A ResNet generator's exact support is far larger
  than where its output actually depends on the input, so tiling halos use this radius.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReceptiveField:
    """Result of ``measure_receptive_field``.

    Parameters
    ----------
    rf_px : int
        Edge of the non-zero gradient support of one output pixel, in input pixels (the
        largest over the output phases of the network's stride).
    radius_px : int
        Largest distance from an output pixel to an input pixel it depends on: the halo that
        makes tiling exact (tile origins on multiples of the stride).
    effective_radius_px : int
        Radius (pixels from the centre) holding ``mass`` of the centre pixel's gradient.
    size_px : int
        Input edge used for the measurement.
    bounded : bool
        False when the support reached the input border at the largest size tried (e.g.
        self-attention, which is global); the figures are then only lower bounds.
    mass : float
        The gradient fraction that defines ``effective_radius_px``.
    """

    rf_px: int
    radius_px: int
    effective_radius_px: int
    size_px: int
    bounded: bool
    mass: float


def _gradient_maps(module, size_px: int, in_channels: int, seed: int, phases: int):
    """|d out[c+k, c+k] / d input| summed over channels, for k in range(phases)."""
    import torch

    from .normstats import collect_norm_stats, fixed_norm_stats, instance_norms

    device = next(module.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(1, in_channels, size_px, size_px, generator=gen) * 2 - 1).to(device)
    module.eval()
    stats = None
    if instance_norms(module):
        tile = ((x[0].permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)
        stats = collect_norm_stats(module, tile[None], device)
    x.requires_grad_(True)
    fixed = fixed_norm_stats(module, stats) if stats is not None else contextlib.nullcontext()
    maps = []
    with torch.enable_grad(), fixed:
        y = module(x)
        c = size_px // 2
        for k in range(phases):
            (grad,) = torch.autograd.grad(y[0, :, c + k, c + k].sum(), x, retain_graph=True)
            maps.append(grad.abs().sum(dim=1)[0].double().cpu().numpy())
    return maps


def _extent(grad: np.ndarray, centre: int) -> tuple[int, int, bool]:
    """(support edge, farthest distance from ``centre``, touches the border)."""
    ys, xs = np.nonzero(grad)
    last = grad.shape[0] - 1
    touches = bool(ys.min() == 0 or xs.min() == 0 or ys.max() == last or xs.max() == last)
    edge = int(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)
    reach = int(max(centre - ys.min(), ys.max() - centre, centre - xs.min(), xs.max() - centre))
    return edge, reach, touches


def _effective_radius(grad: np.ndarray, mass: float) -> int:
    c = grad.shape[0] // 2
    yy, xx = np.indices(grad.shape)
    dist = np.maximum(np.abs(yy - c), np.abs(xx - c)).ravel()
    per_radius = np.bincount(dist, weights=grad.ravel())
    cumulative = np.cumsum(per_radius) / per_radius.sum()
    return int(np.searchsorted(cumulative, mass))


def _has_open_attention(module) -> bool:
    return any(
        type(m).__name__ == "SelfAttention" and bool(m.gamma.detach().abs().sum() > 0)
        for m in module.modules()
    )


def _measure_at(module, size: int, in_channels: int, seed: int, phases: int, mass: float):
    maps = _gradient_maps(module, size, in_channels, seed, phases)
    c = size // 2
    extents = [_extent(g, c + k) for k, g in enumerate(maps)]
    touches = any(t for _, _, t in extents)
    return ReceptiveField(
        rf_px=max(e for e, _, _ in extents),
        radius_px=max(r for _, r, _ in extents),
        effective_radius_px=_effective_radius(maps[0], mass),
        size_px=size,
        bounded=not touches,
        mass=mass,
    )


def measure_receptive_field(
    module,
    start_px: int = 128,
    max_px: int = 1024,
    mass: float = 0.99,
    in_channels: int = 3,
    seed: int = 0,
    phases: int = 8,
) -> ReceptiveField:
    """Measure the receptive field of a generator on random input.

    The input size doubles from ``start_px`` until the gradient support no longer touches
    the border (or ``max_px`` is reached, or the network refuses the size).

    Parameters
    ----------
    module : torch.nn.Module
        The generator, with the weights the figure is wanted for (the exact support hardly
        depends on the weights; the effective radius does).
    mass : float
        Gradient fraction for ``effective_radius_px``.
    phases : int
        Output pixels ``(c + k, c + k)``, k < phases, are probed: a strided network's
        support depends on the pixel's phase, so probe at least its total stride.

    Returns
    -------
    ReceptiveField
    """
    size = start_px
    result = None
    if _has_open_attention(module):
        # Global attention: the support is the whole input at any size; measure once.
        max_px = start_px
    while size <= max_px:
        try:
            result = _measure_at(module, size, in_channels, seed, phases, mass)
        except RuntimeError:
            # Too small for the network's downsamplings (U-Nets need >= 2^num_downs).
            size *= 2
            continue
        if result.bounded:
            return result
        size *= 2
    if result is None:
        raise ValueError(f"the module accepted no input size between {start_px} and {max_px}")
    return result


def receptive_field_px(module, **kwargs) -> int:
    """Edge of the exact receptive field in pixels (a lower bound when not bounded)."""
    return measure_receptive_field(module, **kwargs).rf_px


def effective_radius_px(module, mass: float = 0.99, **kwargs) -> int:
    """Radius in pixels holding ``mass`` of the centre pixel's input gradient."""
    return measure_receptive_field(module, mass=mass, **kwargs).effective_radius_px


def arch_receptive_field(arch: str, **arch_kwargs) -> ReceptiveField:
    """Exact support of an architecture, measured cheaply on a width-2 copy.

    The support depends on kernel sizes, strides and depth, not on the width, so this is the
    figure for any ``ngf``; the effective radius of trained weights needs the real module.
    Self-attention gates are opened (they start closed), so attention models come out
    unbounded, as they are once trained.
    """
    import json

    # Measuring costs seconds to a minute on a busy CPU (the paper generator needs a 512 px
    # input): kept per process, and per torch version in the user cache folder.
    shape_kwargs = {k: v for k, v in arch_kwargs.items() if k not in ("ngf", "init")}
    return _disk_cached_arch_rf(arch, json.dumps(shape_kwargs, sort_keys=True))


@functools.lru_cache(maxsize=32)
def _disk_cached_arch_rf(arch: str, arch_kwargs_json: str) -> ReceptiveField:
    from dataclasses import asdict

    import torch

    from .precision import read_cache_json, user_cache_dir, write_cache_json

    path = user_cache_dir() / "receptive_fields.json"
    key = f"{arch} {arch_kwargs_json} torch {torch.__version__}"
    known = read_cache_json(path)
    if isinstance(known.get(key), dict):
        try:
            return ReceptiveField(**known[key])
        except TypeError:
            pass  # an older layout: measure again
    rf = _cached_arch_rf(arch, arch_kwargs_json)
    write_cache_json(path, {**read_cache_json(path), key: asdict(rf)})
    return rf


@functools.lru_cache(maxsize=32)
def _cached_arch_rf(arch: str, arch_kwargs_json: str) -> ReceptiveField:
    import json

    import torch

    from .build import architecture, build_generator

    arch_kwargs = json.loads(arch_kwargs_json)
    kwargs = {**arch_kwargs, "ngf": 2}
    if arch != "paper":
        kwargs.setdefault("init", "xavier")
    torch.manual_seed(0)
    module = build_generator(arch, **kwargs).float()
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("gamma"):
                param.fill_(0.5)
    return measure_receptive_field(module, phases=min(architecture(arch).stride_px, 8))
