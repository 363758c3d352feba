"""Reference junyanz pytorch-CycleGAN-and-pix2pix state-dict layouts, written from the rules.

Keys and shapes are derived here from the documented layout of upstream ``networks.py``
(``nn.Sequential`` indices, bias only with instance norm, dropout shifting ``conv_block``),
independently of the plugin's classes, plus a functional forward of the ResNet generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _norm(prefix: str, channels: int, norm: str, old_instance: bool) -> dict:
    if norm == "batch":
        return {
            f"{prefix}.weight": (channels,),
            f"{prefix}.bias": (channels,),
            f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,),
            f"{prefix}.num_batches_tracked": (),
        }
    if norm == "instance" and old_instance:  # PyTorch < 0.4 saved these
        return {f"{prefix}.running_mean": (channels,), f"{prefix}.running_var": (channels,)}
    return {}


def _conv(prefix: str, shape: tuple, bias: bool) -> dict:
    # ConvTranspose2d weights are (in, out, k, k): bias has shape[1] entries then
    out = shape[0]
    keys = {f"{prefix}.weight": shape}
    if bias:
        keys[f"{prefix}.bias"] = (out,)
    return keys


def resnet_layout(ngf, n_blocks, norm, dropout, old_instance=False) -> dict:
    """key -> shape of junyanz ResnetGenerator(3, 3, ngf, n_blocks=..)."""
    b = norm == "instance"
    keys = _conv("model.1", (ngf, 3, 7, 7), b) | _norm("model.2", ngf, norm, old_instance)
    keys |= _conv("model.4", (2 * ngf, ngf, 3, 3), b) | _norm(
        "model.5", 2 * ngf, norm, old_instance
    )
    keys |= _conv("model.7", (4 * ngf, 2 * ngf, 3, 3), b)
    keys |= _norm("model.8", 4 * ngf, norm, old_instance)
    second = 6 if dropout else 5
    for i in range(10, 10 + n_blocks):
        p = f"model.{i}.conv_block"
        keys |= _conv(f"{p}.1", (4 * ngf, 4 * ngf, 3, 3), b) | _norm(
            f"{p}.2", 4 * ngf, norm, old_instance
        )
        keys |= _conv(f"{p}.{second}", (4 * ngf, 4 * ngf, 3, 3), b)
        keys |= _norm(f"{p}.{second + 1}", 4 * ngf, norm, old_instance)
    u = 10 + n_blocks
    keys |= {f"model.{u}.weight": (4 * ngf, 2 * ngf, 3, 3)}
    keys |= {f"model.{u}.bias": (2 * ngf,)} if b else {}
    keys |= _norm(f"model.{u + 1}", 2 * ngf, norm, old_instance)
    keys |= {f"model.{u + 3}.weight": (2 * ngf, ngf, 3, 3)}
    keys |= {f"model.{u + 3}.bias": (ngf,)} if b else {}
    keys |= _norm(f"model.{u + 4}", ngf, norm, old_instance)
    keys |= _conv(f"model.{u + 7}", (3, ngf, 7, 7), True)
    return keys


def unet_layout(ngf, num_downs, norm) -> dict:
    """key -> shape of junyanz UnetGenerator(3, 3, num_downs, ngf)."""
    b = norm == "instance"
    levels = [(3, ngf, 3), (ngf, 2 * ngf, None), (2 * ngf, 4 * ngf, None), (4 * ngf, 8 * ngf, None)]
    levels += [(8 * ngf, 8 * ngf, None)] * (num_downs - 4)
    keys: dict = {}
    for depth, (outer, inner, input_nc) in enumerate(levels):
        # the outermost block holds its submodule at index 1, inner blocks at index 3
        p = "model.model" + (".1.model" if depth else "") + ".3.model" * max(depth - 1, 0)
        if depth == 0:
            keys |= _conv(f"{p}.0", (inner, input_nc, 4, 4), b)
            keys |= {f"{p}.3.weight": (2 * inner, outer, 4, 4), f"{p}.3.bias": (outer,)}
        elif depth == len(levels) - 1:
            keys |= _conv(f"{p}.1", (inner, outer, 4, 4), b)
            keys |= {f"{p}.3.weight": (inner, outer, 4, 4)} | (
                {f"{p}.3.bias": (outer,)} if b else {}
            )
            keys |= _norm(f"{p}.4", outer, norm, False)
        else:
            keys |= _conv(f"{p}.1", (inner, outer, 4, 4), b) | _norm(f"{p}.2", inner, norm, False)
            keys |= {f"{p}.5.weight": (2 * inner, outer, 4, 4)}
            keys |= ({f"{p}.5.bias": (outer,)} if b else {}) | _norm(f"{p}.6", outer, norm, False)
    return keys


def random_state_dict(layout: dict, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=gen) * 0.1
    return sd


def resnet_forward(sd: dict, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """Functional ResNet generator, instance norm, no dropout, from the upstream recipe."""

    def conv(x, key, pad, stride=1):
        x = F.pad(x, (pad,) * 4, mode="reflect") if pad else x
        return F.conv2d(x, sd[f"{key}.weight"], sd[f"{key}.bias"], stride=stride)

    def inorm(x):
        return F.instance_norm(x, eps=1e-5)

    h = F.relu(inorm(conv(x, "model.1", 3)))
    for key in ("model.4", "model.7"):
        h = F.relu(inorm(F.conv2d(h, sd[f"{key}.weight"], sd[f"{key}.bias"], stride=2, padding=1)))
    for i in range(10, 10 + n_blocks):
        p = f"model.{i}.conv_block"
        r = F.relu(inorm(conv(h, f"{p}.1", 1)))
        h = h + inorm(conv(r, f"{p}.5", 1))
    u = 10 + n_blocks
    for key in (f"model.{u}", f"model.{u + 3}"):
        h = F.conv_transpose2d(
            h, sd[f"{key}.weight"], sd[f"{key}.bias"], stride=2, padding=1, output_padding=1
        )
        h = F.relu(inorm(h))
    return torch.tanh(conv(h, f"model.{u + 7}", 3))
