"""Checkpoints: our format (safetensors + model card), junyanz / BCI ``.pth``, safe loading.

Our format is a folder holding ``weights.safetensors`` and ``card.json``. ``.pth`` files are
read with ``torch.load(weights_only=True)``: a file that needs pickle code execution is refused
and nothing in it runs.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .card import ModelCard
from .infer_arch import ArchitectureError, infer_architecture
from .registry import find_model, sha256_file

WEIGHTS_NAME = "weights.safetensors"
CARD_NAME = "card.json"
PTH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# Wrappers that training scripts put around a state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "netG", "netG_A", "G_A", "G", "model")
_RUNNING = (".running_mean", ".running_var", ".num_batches_tracked")


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded (the message names the file and what was wrong)."""


@dataclass(frozen=True)
class LoadedModel:
    """A generator ready for inference, with its card.

    Parameters
    ----------
    module : torch.nn.Module
        In eval mode, on the requested device.
    card : ModelCard
        The saved card, or one synthesised from the inferred architecture.
    path : Path
        The weights file.
    """

    module: Any
    card: ModelCard
    path: Path


def _read_pth(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except Exception as err:  # noqa: BLE001 - garbage fails in many ways: one message for all
        raise pth_load_error(path, err) from None


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except PermissionError:
        raise
    except Exception:  # noqa: BLE001 - SafetensorError, OSError, ValueError...
        raise unreadable_checkpoint(path) from None


def unreadable_checkpoint(path: str | Path) -> CheckpointError:
    """The error for a file that is not a checkpoint at all (or no longer: cut short, damaged)."""
    return CheckpointError(
        f"{path} is not a readable checkpoint (corrupt or not a PyTorch/safetensors file)"
    )


def pth_load_error(path: str | Path, err: BaseException) -> CheckpointError:
    """The error for a ``.pth`` that ``torch.load(weights_only=True)`` failed on.

    A well-formed pickle that names code (a class, a function) is refused as such; anything
    else (random bytes, an empty or truncated file) is simply not a checkpoint. Neither message
    suggests ``weights_only=False``.
    """
    if _is_torchscript(Path(path)):
        return CheckpointError(
            f"{path} is a TorchScript archive (torch.jit.save), not a checkpoint of weights; "
            "save the model's state_dict with torch.save instead"
        )
    names = _pickle_globals(Path(path)) if isinstance(err, pickle.UnpicklingError) else []
    if not names:
        return unreadable_checkpoint(path)
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    return CheckpointError(
        f"refused to load {path}: it needs pickle code execution (it references "
        f"{found[1] if found else names[0]}). Only plain tensor checkpoints are loaded (torch.load "
        "weights_only=True). If you trust the file, re-save its state_dict or convert it to "
        "safetensors."
    )


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") for n in zf.namelist())
    except Exception:  # noqa: BLE001 - not a zip at all
        return False


def _pickle_globals(path: Path, limit: int = 64 << 20) -> list[str]:
    """The globals named by the well-formed pickles of ``path``; nothing is unpickled.

    A torch zip holds one pickle (``*/data.pkl``); the legacy format a few in a row, then raw
    tensor bytes. Parsing stops at the first malformed opcode, so random bytes name nothing.
    """
    import io
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                data = zf.open(member).read(limit) if member else b""
        else:
            with open(path, "rb") as fh:
                data = fh.read(limit)
    except Exception:  # noqa: BLE001 - an unreadable zip: not a checkpoint either
        return []
    stream, names = io.BytesIO(data), []
    while stream.tell() < len(data):
        found = []
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":  # protocol 4+: the name was pushed before
                    found.append("a global named on the stack")
        except Exception:  # noqa: BLE001 - not (or no longer) a pickle
            break
        names += found
    return names


def unwrap_state_dict(obj: Any, path: Path) -> dict:
    """Find the tensor dict inside what a training script saved."""
    import torch

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if key in obj:
                return unwrap_state_dict(obj[key], path)
    found = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        f"{path} holds no state dict of tensors: expected tensors or one of {_WRAPPER_KEYS}, "
        f"found {found}"
    )


def clean_state_dict(state_dict: dict) -> dict:
    """Strip DataParallel's ``module.`` prefix and PyTorch < 0.4 InstanceNorm statistics.

    PyTorch < 0.4 saved unused ``running_mean`` / ``running_var`` for every InstanceNorm; they
    are recognised by having neither a ``.weight`` nor a ``.num_batches_tracked`` beside them
    (upstream junyanz drops them the same way). Running statistics that come with
    ``num_batches_tracked`` are real: BatchNorm(affine=False) or
    InstanceNorm(track_running_stats=True), and they are kept and used.
    """
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    drop = set()
    for key in sd:
        for suffix in _RUNNING[:2]:
            prefix = key[: -len(suffix)]
            if key.endswith(suffix) and not any(
                prefix + s in sd for s in (".weight", ".num_batches_tracked")
            ):
                drop.add(key)
    return {k: v for k, v in sd.items() if k not in drop}


def read_state_dict(path: str | Path) -> dict:
    """Read and clean the weights of a ``.safetensors`` or ``.pth``-like file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        state_dict = clean_state_dict(_read_safetensors(path))
    elif path.suffix in PTH_SUFFIXES:
        state_dict = clean_state_dict(unwrap_state_dict(_read_pth(path), path))
    else:
        state_dict = None
    if state_dict is not None:
        check_finite(state_dict, path)
        return state_dict
    raise CheckpointError(
        f"{path}: unknown checkpoint type {path.suffix!r}; expected .safetensors or {PTH_SUFFIXES}"
    )


def check_finite(state_dict: dict, path) -> None:
    """Raise ``CheckpointError`` when a floating-point tensor holds NaN or infinity.

    A training run that diverged once saved NaN weights, which staining turned into a black
    slide with exit 0.
    """
    import torch

    for key, value in state_dict.items():
        if (
            torch.is_tensor(value)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            raise CheckpointError(
                f"{path}: weight {key!r} holds NaN or infinite values (a training run that "
                "diverged?); this model cannot stain"
            )


def check_state_dict(module, state_dict: dict, path: Path) -> None:
    """Raise ``CheckpointError`` naming missing, unexpected and mis-shaped keys."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(state_dict[k].shape)}"
        for k in expected
        if k in state_dict and expected[k].shape != state_dict[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{path} does not fit the architecture{_norm_hint(state_dict)}: missing keys {missing[:6]}"
            f"{' ...' if len(missing) > 6 else ''}; unexpected keys {unexpected[:6]}"
            f"{' ...' if len(unexpected) > 6 else ''}; shape mismatches {shapes[:6]}"
        )


def _norm_hint(state_dict: dict) -> str:
    """What the checkpoint's norm layers hold, for a mismatch message."""
    stats = any(k.endswith(".running_mean") for k in state_dict)
    if not stats:
        return ""
    affine = any(
        k.endswith(".running_mean") and k[:-13] + ".weight" in state_dict for k in state_dict
    )
    kind = "affine BatchNorm" if affine else "running statistics without affine weights"
    return f" (its norm layers hold {kind}; the card's 'norm' may be wrong)"


def _card_for(path: Path) -> ModelCard | None:
    for candidate in (path.with_suffix(".json"), path.parent / CARD_NAME):
        if candidate.is_file():
            return ModelCard.from_json(candidate)
    return None


def _default_card(path: Path, arch: str, arch_kwargs: dict) -> ModelCard:
    # junyanz names G_A (A->B) and G_B (B->A); the stains themselves are unknown.
    direction = "B->A" if "G_B" in path.name else "A->B"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).lstrip("._-")[:100] or "model"
    return ModelCard(
        name=name,
        arch=arch,
        arch_kwargs=arch_kwargs,
        direction=direction,
        notes=f"architecture inferred from the weights of {path.name}",
    )


def _weights_in(folder: Path) -> Path:
    if (folder / WEIGHTS_NAME).is_file():
        return folder / WEIGHTS_NAME
    found = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", *PTH_SUFFIXES))
    if len(found) != 1:
        raise CheckpointError(
            f"{folder}: expected {WEIGHTS_NAME} or exactly one weights file, found "
            f"{[p.name for p in found]}"
        )
    return found[0]


def resolve_weights(path_or_name: str | Path) -> Path:
    """The weights file for a path (file, card or folder) or a registry name."""
    path = Path(path_or_name).expanduser()
    if not path.exists():
        path = find_model(str(path_or_name))
    if path.is_dir():
        return _weights_in(path)
    if path.suffix == ".json":
        return _weights_in(path.parent)
    return path


def load_model(
    path_or_name: str | Path,
    device=None,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
) -> LoadedModel:
    """Load a generator from our format, a junyanz / BCI ``.pth``, or a registry name.

    Parameters
    ----------
    path_or_name : str or Path
        A model folder, ``card.json``, weights file, or a name listed by ``virtualstain models``.
    device : torch.device or str, optional
        Default: ``choose_device()`` (cuda, then mps, then cpu).
    arch, arch_kwargs : optional
        Override the card / the architecture inferred from the weights.

    Raises
    ------
    CheckpointError
        Refused, truncated or mismatched files, a wrong sha256, or an unknown layout.
    """
    from .build import build_generator
    from .device import choose_device

    path = resolve_weights(path_or_name)
    state_dict = read_state_dict(path)
    card = _card_for(path)
    if card is not None and card.sha256 is not None:
        actual = sha256_file(path)
        if actual != card.sha256:
            raise CheckpointError(
                f"{path}: sha256 {actual} does not match the model card's {card.sha256}"
            )
    if arch is None and card is None:
        try:
            arch, arch_kwargs = infer_architecture(state_dict)
        except ArchitectureError as err:
            raise CheckpointError(f"{path}: {err}") from None
    if card is None:
        card = _default_card(path, arch, dict(arch_kwargs or {}))
    elif arch is not None:
        card = replace(card, arch=arch, arch_kwargs=dict(arch_kwargs or {}))
    _check_before_building(card, state_dict, path)
    module = build_generator(card.arch, **card.arch_kwargs)
    module.load_state_dict(state_dict, strict=True)
    device = choose_device() if device is None else device
    return LoadedModel(module.to(device).eval(), card, path)


def _check_before_building(card: ModelCard, state_dict: dict, path: Path) -> None:
    """Compare the weights with the card's architecture built on the meta device.

    Nothing is allocated, so a card that asks for a huge network (say ``ngf`` 100000) is
    refused by its shapes before it can exhaust memory.
    """
    import torch

    from .build import build_generator

    try:
        with torch.device("meta"):
            reference = build_generator(card.arch, **card.arch_kwargs)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: the model card's architecture cannot be built: {err}"
        ) from None
    check_state_dict(reference, state_dict, path)


def _measured_card(module, card: ModelCard, precision_tiles, measure_rf: bool) -> ModelCard:
    """Fill in the receptive field and the bf16 vs fp32 difference when asked to."""
    changes: dict[str, Any] = {}
    if measure_rf:
        from .receptive import arch_receptive_field, measure_receptive_field

        rf = arch_receptive_field(card.arch, **card.arch_kwargs)
        changes["receptive_field_px"] = rf.rf_px
        if rf.bounded:
            size = 1 << max(rf.rf_px, 64).bit_length()  # smallest power of two > the support
            real = measure_receptive_field(module, start_px=size, max_px=size, phases=1)
            changes["effective_radius_px"] = real.effective_radius_px
    if precision_tiles is not None:
        from .device import best_precision
        from .inference import precision_difference

        device = next(module.parameters()).device
        delta = precision_difference(module, precision_tiles, best_precision(device), device)
        note = (
            f"{delta['precision']} vs fp32 on {len(precision_tiles)} tiles ({device.type}): "
            f"mean {delta['mean_abs_diff']:.2f}, max {delta['max_abs_diff']} grey levels"
        )
        changes["notes"] = f"{card.notes}; {note}" if card.notes else note
    return replace(card, **changes)


def save_model(
    module,
    card: ModelCard,
    folder: str | Path,
    overwrite: bool = False,
    precision_tiles=None,
    measure_receptive_field: bool = False,
) -> Path:
    """Write ``weights.safetensors`` and ``card.json`` (with the weights' sha256) to ``folder``.

    The card's architecture is rebuilt and compared with the module first, so a card that
    would not load again is refused now rather than later.

    Parameters
    ----------
    module : torch.nn.Module
    card : ModelCard
    folder : str or Path
        Created if needed; an existing model there is only replaced with ``overwrite=True``.
    precision_tiles : np.ndarray, optional
        (N, H, W, 3) uint8 tiles: the bf16 (or fp16) vs fp32 difference on them is appended
        to the card's notes.
    measure_receptive_field : bool
        Fill ``receptive_field_px`` and ``effective_radius_px`` (seconds to tens of seconds).

    Returns
    -------
    Path
        The folder.
    """
    import torch
    from safetensors.torch import save_file

    from .build import build_generator

    folder = Path(folder)
    if (folder / CARD_NAME).exists() and not overwrite:
        raise FileExistsError(f"{folder} already holds a model; pass overwrite=True to replace it")
    with torch.device("meta"):
        reference = build_generator(card.arch, **card.arch_kwargs)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    check_state_dict(reference, state_dict, folder)
    check_finite(state_dict, folder)
    card = _measured_card(module, card, precision_tiles, measure_receptive_field)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_NAME
    save_file(state_dict, str(weights), metadata={"format": "pt", "arch": card.arch})
    replace(card, sha256=sha256_file(weights)).to_json(folder / CARD_NAME)
    return folder
