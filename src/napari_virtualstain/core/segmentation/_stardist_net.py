"""StarDist2D's U-Net in torch, reading and writing StarDist's Keras ``weights_best.h5``.

Why a port: TensorFlow and Mesa's llvmpipe each ship their own LLVM, and a napari GL context plus
TensorFlow in one process crashes (see ``_tf_safe``). The network is a plain U-Net (3x3 convs,
max-pooling, nearest up-sampling, concatenated skips), so a torch twin that loads the same Keras
weights gives the same probabilities and distances (tested against TensorFlow in a subprocess)
while stardist's own TF-free NMS and ``polygons_to_label`` do the rest.

The layer names and build order mirror ``stardist.models.StarDist2D._build`` and
``csbdeep.internals.blocks.unet_block``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_ACTIVATIONS = ("relu", "elu", "tanh", "sigmoid", "linear", "softplus")


@dataclass(frozen=True)
class StarDistNetConfig:
    """The parts of a StarDist2D ``config.json`` that define the network.

    Only the ``unet`` backbone without batch normalisation is supported; that covers StarDist's
    published 2D models (``2D_versatile_he``, ``2D_versatile_fluo``, ``2D_paper_dsb2018``).
    """

    n_channel_in: int
    n_rays: int
    grid: tuple[int, int]
    n_depth: int
    kernel_size: tuple[int, int]
    n_filter_base: int
    n_conv_per_depth: int
    pool: tuple[int, int]
    activation: str
    last_activation: str
    conv_after_unet: int
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.n_channel_in < 1 or self.n_rays < 3 or self.n_depth < 1:
            raise ValueError(f"invalid StarDist config: {self}")
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"only odd unet_kernel_size is supported, found {self.kernel_size}")
        if any(g < 1 for g in self.grid) or any(p < 1 for p in self.pool):
            raise ValueError(f"grid and unet_pool must be >= 1, found {self.grid}, {self.pool}")
        for act in (self.activation, self.last_activation):
            if act not in _ACTIVATIONS:
                raise ValueError(f"unsupported activation {act!r}; expected one of {_ACTIVATIONS}")

    @classmethod
    def from_json(cls, source: str | Path | dict[str, Any]) -> StarDistNetConfig:
        """Read a StarDist2D ``config.json`` (path or already-parsed dict)."""
        cfg = source if isinstance(source, dict) else json.loads(Path(source).read_text())
        where = "config" if isinstance(source, dict) else str(source)
        expected = {"n_dim": 2, "axes": "YXC", "backbone": "unet"}
        for key, value in expected.items():
            if cfg.get(key, value) != value:
                raise ValueError(
                    f"{where}: {key}={cfg.get(key)!r}, expected {value!r} (StarDist2D)"
                )
        if cfg.get("unet_batch_norm", False):
            raise ValueError(f"{where}: unet_batch_norm=true is not supported by the torch port")
        if cfg.get("n_classes"):
            raise ValueError(f"{where}: multi-class StarDist (n_classes) is not supported")
        missing = [k for k in ("n_channel_in", "n_rays", "grid") if k not in cfg]
        if missing:
            raise ValueError(f"{where}: missing keys {missing}")
        activation = cfg.get("unet_activation", "relu")
        return cls(
            n_channel_in=int(cfg["n_channel_in"]),
            n_rays=int(cfg["n_rays"]),
            grid=tuple(int(g) for g in cfg["grid"]),
            n_depth=int(cfg.get("unet_n_depth", 3)),
            kernel_size=tuple(int(k) for k in cfg.get("unet_kernel_size", (3, 3))),
            n_filter_base=int(cfg.get("unet_n_filter_base", 32)),
            n_conv_per_depth=int(cfg.get("unet_n_conv_per_depth", 2)),
            pool=tuple(int(p) for p in cfg.get("unet_pool", (2, 2))),
            activation=activation,
            last_activation=cfg.get("unet_last_activation") or activation,
            conv_after_unet=int(cfg.get("net_conv_after_unet", 128)),
            prefix=cfg.get("unet_prefix", "") or "",
        )

    @property
    def div_by(self) -> tuple[int, int]:
        """Input sizes must be multiples of this (grid times total U-Net pooling)."""
        return tuple(p**self.n_depth * g for p, g in zip(self.pool, self.grid, strict=True))

    def receptive_radius_px(self) -> int:
        """Upper bound, in input pixels, of how far an output depends on its input.

        Summed layer by layer: a k x k conv at stride s reaches (k // 2) * s further, a pooling
        or nearest up-sampling by p at stride s reaches (p - 1) * s further.
        """
        k, p = max(self.kernel_size), max(self.pool)
        radius, stride = 0, 1
        for step in _grid_pool_steps(self.grid):
            radius += self.n_conv_per_depth * (k // 2) * stride + (max(step) - 1) * stride
            stride *= max(step)
        for _ in range(self.n_depth):
            radius += self.n_conv_per_depth * (k // 2) * stride + (p - 1) * stride
            stride *= p
        radius += self.n_conv_per_depth * (k // 2) * stride
        for _ in range(self.n_depth):
            radius += (p - 1) * stride
            stride //= p
            radius += self.n_conv_per_depth * (k // 2) * stride
        return radius + (k // 2) * stride * (self.conv_after_unet > 0)


def _grid_pool_steps(grid: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Pooling steps StarDist uses to reach ``grid`` (factor 2 per step, per axis)."""
    pooled, steps = np.ones(len(grid), int), []
    while tuple(pooled) != tuple(grid):
        step = 1 + (np.asarray(grid) > pooled)
        pooled = pooled * step
        steps.append(tuple(int(s) for s in step))
    return steps


def layer_specs(cfg: StarDistNetConfig) -> list[tuple[str | None, int, int, int, str]]:
    """Weighted layers in Keras build order: (name or None if unnamed, in, out, kernel, act).

    Keras names the grid-pooling convs automatically (``conv2d``, ``conv2d_1``...), so they are
    ``None`` here and matched by order.
    """
    k, act, specs = cfg.kernel_size[0], cfg.activation, []
    n_in, base, ncv = cfg.n_channel_in, cfg.n_filter_base, cfg.n_conv_per_depth
    for _ in _grid_pool_steps(cfg.grid):
        for _ in range(ncv):
            specs.append((None, n_in, base, k, act))
            n_in = base
    skips = []
    for n in range(cfg.n_depth):
        for i in range(ncv):
            specs.append((f"{cfg.prefix}down_level_{n}_no_{i}", n_in, base * 2**n, k, act))
            n_in = base * 2**n
        skips.append(n_in)
    for i in range(ncv - 1):
        specs.append((f"{cfg.prefix}middle_{i}", n_in, base * 2**cfg.n_depth, k, act))
        n_in = base * 2**cfg.n_depth
    out = base * 2 ** max(0, cfg.n_depth - 1)
    specs.append((f"{cfg.prefix}middle_{ncv}", n_in, out, k, act))
    n_in = out
    for n in reversed(range(cfg.n_depth)):
        n_in += skips[n]
        for i in range(ncv - 1):
            specs.append((f"{cfg.prefix}up_level_{n}_no_{i}", n_in, base * 2**n, k, act))
            n_in = base * 2**n
        out = base * 2 ** max(0, n - 1)
        last = act if n > 0 else cfg.last_activation
        specs.append((f"{cfg.prefix}up_level_{n}_no_{ncv}", n_in, out, k, last))
        n_in = out
    if cfg.conv_after_unet > 0:
        specs.append(("features", n_in, cfg.conv_after_unet, k, act))
        n_in = cfg.conv_after_unet
    specs.append(("prob", n_in, 1, 1, "sigmoid"))
    specs.append(("dist", n_in, cfg.n_rays, 1, "linear"))
    return specs


def build_stardist_unet(cfg: StarDistNetConfig):
    """Build the torch module (random init); see :func:`load_keras_weights`."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    acts = {
        "relu": F.relu,
        "elu": F.elu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "softplus": F.softplus,
        "linear": lambda x: x,
    }

    class StarDistUNet(nn.Module):
        """NCHW float input in, (prob N1hw, dist NRhw) out at 1/grid resolution."""

        def __init__(self) -> None:
            super().__init__()
            self.config = cfg
            self.specs = layer_specs(cfg)
            self.convs = nn.ModuleList(
                nn.Conv2d(c_in, c_out, k, padding=k // 2) for _, c_in, c_out, k, _ in self.specs
            )

        def _conv(self, i: int, x):
            return acts[self.specs[i][4]](self.convs[i](x))

        def forward(self, x):
            i, ncv = 0, cfg.n_conv_per_depth
            for step in _grid_pool_steps(cfg.grid):
                for _ in range(ncv):
                    x, i = self._conv(i, x), i + 1
                x = F.max_pool2d(x, step)
            skips = []
            for _ in range(cfg.n_depth):
                for _ in range(ncv):
                    x, i = self._conv(i, x), i + 1
                skips.append(x)
                x = F.max_pool2d(x, cfg.pool)
            for _ in range(ncv):
                x, i = self._conv(i, x), i + 1
            for n in reversed(range(cfg.n_depth)):
                up = F.interpolate(x, scale_factor=cfg.pool, mode="nearest")
                x = torch.cat([up, skips[n]], dim=1)
                for _ in range(ncv):
                    x, i = self._conv(i, x), i + 1
            if cfg.conv_after_unet > 0:
                x, i = self._conv(i, x), i + 1
            return self._conv(i, x), self._conv(i + 1, x)

    return StarDistUNet()


def _read_str_attr(group, name: str) -> list[str]:
    """Keras splits long string-list attributes into ``name0``, ``name1``... chunks."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values += list(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_keras_weights(path: str | Path) -> list[tuple[str, list[np.ndarray]]]:
    """(layer name, [kernel, bias]) for every weighted layer of a Keras HDF5 weights file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"StarDist weights not found: {path}")
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        layers = []
        for name in _read_str_attr(root, "layer_names"):
            weight_names = _read_str_attr(root[name], "weight_names")
            if weight_names:
                layers.append((name, [np.asarray(root[name][w]) for w in weight_names]))
    if not layers:
        raise ValueError(f"{path}: no Keras layer weights found (not a Keras HDF5 weights file?)")
    return layers


def load_keras_weights(module, path: str | Path) -> None:
    """Copy a StarDist ``weights_best.h5`` into ``module`` (from :func:`build_stardist_unet`).

    Named layers are matched by name, the automatically named grid-pooling convs by order;
    every shape is checked against the config.
    """
    import torch

    layers = read_keras_weights(path)
    by_name = dict(layers)
    named = {name for name, *_ in module.specs if name is not None}
    unnamed = [w for name, w in layers if name not in named and not name.endswith("_class")]
    n_unnamed = sum(name is None for name, *_ in module.specs)
    if len(unnamed) != n_unnamed:
        raise ValueError(f"{path}: expected {n_unnamed} grid convs, found {len(unnamed)} unnamed")
    unnamed_iter = iter(unnamed)
    with torch.no_grad():
        for conv, (name, c_in, c_out, k, _) in zip(module.convs, module.specs, strict=True):
            if name is not None and name not in by_name:
                raise ValueError(f"{path}: layer {name!r} missing; does config.json match?")
            weights = by_name[name] if name is not None else next(unnamed_iter)
            kernel, bias = weights[0], weights[1]
            if kernel.shape != (k, k, c_in, c_out) or bias.shape != (c_out,):
                raise ValueError(
                    f"{path}: layer {name or 'conv2d'} has kernel {kernel.shape}, "
                    f"config.json expects {(k, k, c_in, c_out)}"
                )
            # Keras kernels are (kh, kw, in, out); torch wants (out, in, kh, kw).
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
            conv.bias.copy_(torch.from_numpy(bias))


def save_keras_weights(module, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``module``'s weights as a Keras HDF5 weights file that StarDist2D loads.

    Layers are listed in Keras build order, which is what Keras' order-based loader expects.
    """
    import h5py

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    auto = iter(["conv2d"] + [f"conv2d_{i}" for i in range(1, len(module.specs))])
    names = [name if name is not None else next(auto) for name, *_ in module.specs]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode("utf8") for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"3.0.0"
        for name, conv in zip(names, module.convs, strict=True):
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array(
                [f"{name}/kernel".encode(), f"{name}/bias".encode()]
            )
            kernel = conv.weight.detach().cpu().numpy().transpose(2, 3, 1, 0)
            group.create_dataset(f"{name}/kernel", data=np.ascontiguousarray(kernel))
            group.create_dataset(f"{name}/bias", data=conv.bias.detach().cpu().numpy())
    return path
