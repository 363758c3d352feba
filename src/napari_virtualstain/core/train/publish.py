"""Register a run's best checkpoints as models the viewer and the CLI can pick by name."""

from __future__ import annotations

import shutil
from pathlib import Path


def register_best(
    run_dir: str | Path, models_dir: str | Path | None = None, overwrite: bool = False
) -> list[Path]:
    """Copy every model folder of ``run_dir/best`` into the user models folder.

    Each copy is named by its card's name (``<run name>-he2ki67`` ...), which is the name the
    registry lists. ``models_dir`` defaults to the registry's user folder
    (``$NAPARI_VIRTUALSTAIN_MODELS`` or ``~/.napari-virtualstain/models``).

    Raises
    ------
    FileNotFoundError
        The run has no best checkpoint yet.
    FileExistsError
        A model of that name is registered already and ``overwrite`` is False.
    """
    from ..models import ModelCard, user_models_dir

    best = Path(run_dir) / "best"
    folders = sorted(p for p in best.glob("*") if (p / "card.json").is_file())
    if not folders:
        raise FileNotFoundError(f"{best}: no checkpoint yet (a run writes one after each epoch)")
    target_root = Path(models_dir) if models_dir is not None else user_models_dir()
    target_root.mkdir(parents=True, exist_ok=True)
    written = []
    for folder in folders:
        card = ModelCard.from_json(folder / "card.json")
        dest = target_root / card.name
        if dest.exists():
            if not overwrite:
                raise FileExistsError(
                    f"a model named {card.name!r} is registered at {dest}; choose another run "
                    "name or allow overwriting"
                )
            shutil.rmtree(dest)
        shutil.copytree(folder, dest)
        written.append(dest)
    return written
