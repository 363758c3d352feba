"""``virtualstain train cyclegan|pix2pix``: train seed models on your own tiles.

A run folder holds ``epochs/``, ``best/`` and ``last/`` (safetensors + model card per generator,
``last/state.pt`` to resume), ``metrics.csv`` and ``metrics.png``. Re-running the same command
on the same ``--out`` resumes where it stopped (after Ctrl-C, at the step it stopped at). A run
whose loss becomes NaN or infinite stops with exit 1 and saves nothing of it. At the end the
best checkpoint is registered under its card name, so the viewer and ``virtualstain stain
--model`` can pick it.
"""

from __future__ import annotations

from pathlib import Path

import click

from ._params import MPP

_COMMON = [
    click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Run folder."),
    click.option("--epochs", type=int, default=10, show_default=True),
    click.option("--steps-per-epoch", type=int, help="Default: one pass over the training tiles."),
    click.option("--lr", type=float, default=2e-4, show_default=True),
    click.option("--ngf", type=int, help="Generator width (default: the architecture's)."),
    click.option("--n-blocks", type=int, help="Residual blocks (default: the architecture's)."),
    click.option("--ndf", type=int, default=64, show_default=True, help="Discriminator width."),
    click.option(
        "--mpp",
        type=MPP,
        help="Tiles' µm/px (default: the one their index.csv / pairs.csv states).",
    ),  # fmt: skip
    click.option("--name", help="Model name prefix (default: the run folder's name)."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, mps."),
    click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
        default="auto",
        show_default=True,
        help="auto = mixed precision on a GPU, fp32 on the CPU.",
    ),  # fmt: skip
    click.option(
        "--register/--no-register",
        default=True,
        show_default=True,
        help="Register the best checkpoint as a named model at the end.",
    ),  # fmt: skip
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
]


def common_options(func):
    for option in reversed(_COMMON):
        func = option(func)
    return func


def _widths(ngf: int | None, n_blocks: int | None) -> dict:
    """Only the widths the user gave: the configs keep each architecture's defaults."""
    given = {"ngf": ngf, "n_blocks": n_blocks}
    return {k: v for k, v in given.items() if v is not None}


def _precision(precision: str, device: str) -> tuple[str, object]:
    from napari_virtualstain.core.models import best_precision, choose_device

    dev = choose_device(device)
    if precision != "auto":
        return precision, dev
    return (best_precision(dev) if dev.type == "cuda" else "fp32"), dev


def _mpp(given: float | None, stated: dict) -> float | None:
    """The run's pixel size: the tile folders' stated one (checked against ``given``)."""
    from napari_virtualstain.core.train.sources import resolve_mpp

    mpp = resolve_mpp(given, stated)
    if mpp is None:
        click.echo("pixel size unknown (no index.csv states it): the model card records none; "
                   "pass --mpp to record it")  # fmt: skip
    elif given is None:
        click.echo(f"pixel size {mpp} µm/px (stated by the tiles' index)")
    return mpp


class _StopAsked(Exception):
    """The first Ctrl-C: stop after the running step."""


def _drain_until_ctrl_c(fit, on_progress) -> None:
    """Drain ``fit``; the first Ctrl-C stops it after the running step (the trainer saves its
    state when closed between steps), a second one at once."""
    import signal
    import threading

    from napari_virtualstain.core.progress import drain

    asked: list[bool] = []

    def ask(signum, frame) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(True)
        click.echo("\nstopping after this step (Ctrl-C again to stop at once, unsaved)", err=True)

    def check(p) -> None:
        on_progress(p)
        if asked:
            raise _StopAsked

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, ask) if main else None
    try:
        drain(fit, check)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _run(trainer, out: Path, register: bool, quiet: bool) -> None:
    """Drive ``trainer.fit()`` with the CLI's progress bar, then register the best checkpoint."""
    import sys

    from tqdm import tqdm

    from napari_virtualstain.cli.progress import tqdm_progress
    from napari_virtualstain.core.train.publish import register_best
    from napari_virtualstain.core.train.runner import TrainingDiverged

    if trainer.resume_if_possible():
        click.echo(f"resuming {out} at epoch {trainer.epoch + 1}, step {trainer.step}")
    fit = trainer.fit()
    try:
        with tqdm_progress("training", quiet) as show:

            def on_progress(p) -> None:
                show(p)
                if p.phase == "epoch":  # the epoch's held-out metrics stay on screen
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in p.metrics.items() if k != "epoch")
                    line = f"epoch {p.epoch + 1}: {shown}"
                    # above the bar (tqdm.write), not glued to it; the same stdout either way
                    tqdm.write(line, file=sys.stdout) if not quiet else click.echo(line)

            _drain_until_ctrl_c(fit, on_progress)
    except TrainingDiverged as err:
        raise click.ClickException(str(err)) from err
    except _StopAsked:
        fit.close()  # saves the state between two steps
        raise click.ClickException(
            f"interrupted at epoch {trainer.epoch + 1}, step {trainer.step}; the state is in "
            f"{out / 'last'}. Rerun the same command to resume there"
        ) from None
    click.echo(f"run folder: {out} (metrics.csv, metrics.png, best/, last/)")
    if register and (out / "best").is_dir():
        try:
            for path in register_best(out):
                click.echo(f"registered {path.name} -> {path}")
        except FileExistsError as err:
            raise click.ClickException(f"{err} (or pass --no-register)") from err


@click.group()
def train() -> None:
    """Train the seed generators (CycleGAN, Pyramid pix2pix) on tile folders."""


@train.command()
@click.option("--a", "a_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="H&E tile folder (held-out tiles split off by --test-fraction).")  # fmt: skip
@click.option("--b", "b_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="IHC tile folder.")  # fmt: skip
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Instead of --a/--b: a root with trainA/ trainB/ testA/ testB/.")  # fmt: skip
@click.option("--variant", type=click.Choice(["plain", "skip", "ssim", "skip+ssim"]),
              default="skip+ssim", show_default=True, help="Ablation of the paper's Fig. 3.")  # fmt: skip
@click.option("--tile-px", type=int, default=288, show_default=True, help="Training crop.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--lambda-cycle", type=float, default=5.0, show_default=True)
@click.option("--beta-ssim", type=float, default=5.0, show_default=True)
@click.option("--lambda-identity", type=float, default=0.0, show_default=True)
@click.option("--test-fraction", type=float, default=0.1, show_default=True,
              help="Held out of --a/--b: by slide, else spatial blocks with overlapping tiles "
                   "dropped (needs the folders' index.csv; else by file name).")  # fmt: skip
@click.option("--phash-weights", default="imagenet", show_default=True,
              help="ResNet-18 weights for the P-hash when held-out B references exist.")  # fmt: skip
@common_options
def cyclegan(a_dir, b_dir, data, variant, tile_px, batch_size, lambda_cycle, beta_ssim,
             lambda_identity, test_fraction, phash_weights, out, epochs, steps_per_epoch, lr, ngf,
             n_blocks, ndf, mpp, name, seed, device, precision, register, quiet) -> None:  # fmt: skip
    """Unpaired H&E <-> IHC CycleGAN (seed 000: skip connections + SSIM loss, λ = β = 5)."""
    from napari_virtualstain.core.train.cyclegan import CycleGANConfig, CycleGANTrainer
    from napari_virtualstain.core.train.layouts import load_unpaired_layout, unpaired_from_folders
    from napari_virtualstain.core.train.sources import folder_mpp

    if (data is None) == (a_dir is None or b_dir is None):
        raise click.UsageError("give either --data ROOT or both --a DIR and --b DIR")
    try:
        split = (
            load_unpaired_layout(data)
            if data
            else unpaired_from_folders(a_dir, b_dir, test_fraction)
        )
        folders = (data / "trainA", data / "trainB") if data else (a_dir, b_dir)
        mpp = _mpp(mpp, {str(f): folder_mpp(f) for f in folders})
        click.echo(f"data: {split.description}")
        precision, dev = _precision(precision, device)
        config = CycleGANConfig(
            variant=variant, tile_px=tile_px, batch_size=batch_size, lambda_cycle=lambda_cycle,
            beta_ssim=beta_ssim, lambda_identity=lambda_identity, epochs=epochs,
            steps_per_epoch=steps_per_epoch, lr=lr, mpp=mpp, seed=seed, precision=precision,
            name=name or out.name, phash_weights=phash_weights, ndf=ndf, **_widths(ngf, n_blocks),
        )  # fmt: skip
        trainer = CycleGANTrainer(config, split, out, dev)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise click.UsageError(str(err)) from err
    _run(trainer, out, register, quiet)


@train.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="BCI root: HE/train, HE/test, IHC/train, IHC/test (matched by name).")  # fmt: skip
@click.option("--attention/--no-attention", default=False, show_default=True,
              help="Self-attention in the generator.")  # fmt: skip
@click.option("--tile-px", type=int, default=256, show_default=True, help="Training crop.")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--pyramid-weights", default="25,25,25,25", show_default=True,
              help="L1 weight per Gaussian-pyramid level, full resolution first.")  # fmt: skip
@common_options
def pix2pix(data, attention, tile_px, batch_size, pyramid_weights, out, epochs, steps_per_epoch,
            lr, ngf, n_blocks, ndf, mpp, name, seed, device, precision, register, quiet) -> None:  # fmt: skip
    """Paired Pyramid pix2pix (BCI), with or without self-attention."""
    from napari_virtualstain.core.train.layouts import load_bci_layout
    from napari_virtualstain.core.train.pix2pix import Pix2PixConfig, Pix2PixTrainer
    from napari_virtualstain.core.train.sources import pairs_mpp

    try:
        weights = tuple(float(w) for w in pyramid_weights.split(","))
        split = load_bci_layout(data)
        mpp = _mpp(mpp, {str(data / "pairs.csv"): pairs_mpp(data)})
        click.echo(f"data: {split.description}")
        precision, dev = _precision(precision, device)
        config = Pix2PixConfig(
            attention=attention, tile_px=tile_px, batch_size=batch_size, pyramid_weights=weights,
            epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr, mpp=mpp, seed=seed,
            precision=precision, name=name or out.name, ndf=ndf, **_widths(ngf, n_blocks),
        )  # fmt: skip
        trainer = Pix2PixTrainer(config, split, out, dev)
    except (ValueError, FileNotFoundError) as err:
        raise click.UsageError(str(err)) from err
    _run(trainer, out, register, quiet)


@train.command()
@click.option("--points", multiple=True, metavar="DIR[@MPP]",
              help="Point tiles: DIR/images/*.png + DIR/labels/*.txt ('x y [class]'). Repeatable.")  # fmt: skip
@click.option("--masks", multiple=True, metavar="DIR[@MPP]",
              help="Instance masks: DIR/NAME_image.png + DIR/NAME_labels.png; no @MPP = estimated "
                   "from the nuclei. Repeatable.")  # fmt: skip
@click.option("--holdout-points", multiple=True, metavar="DIR[@MPP]",
              help="Point tiles used only for validation (other slides). Repeatable.")  # fmt: skip
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--steps", type=int, default=2000, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--name", default="nuclei-endonuke-dsb", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Fixes the split and batches.")
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads.")
@click.option("--fp16/--fp32", default=True, show_default=True,
              help="fp16 weights when they score no worse on the tune split.")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def nuclei(points, masks, holdout_points, out, steps, batch_size, lr, name, seed, threads, fp16,
           quiet) -> None:  # fmt: skip
    """The learned nucleus model (centre heatmap + foreground) from points and masks.

    The defaults reproduce the shipped model with --points .../endonuke_data@0.5
    --holdout-points .../staining_ds@0.25 --masks .../dsb2018_brightfield. Re-running on the
    same --out resumes. The model folder is OUT/model (load it with --segmenter learned and
    model=OUT/model, or copy it into the user models folder).
    """
    from napari_virtualstain.cli.progress import tqdm_progress
    from napari_virtualstain.core.progress import drain
    from napari_virtualstain.core.train.nuclei import (
        NucleiTrainConfig,
        NucleiTrainer,
        finish_training,
        prepare_data,
    )  # fmt: skip

    if not points and not masks:
        raise click.UsageError("give at least one --points or --masks folder")
    try:
        config = NucleiTrainConfig(name=name, steps=steps, batch_size=batch_size, lr=lr,
                                   seed=seed, threads=threads)  # fmt: skip
        samples, split = prepare_data(points, masks, holdout_points, config.mpp, seed)
        train_set = [s for s in samples if s.name in set(split.train)]
        trainer = NucleiTrainer(config, train_set, out)
        if trainer.resume_if_possible():
            click.echo(f"resuming {out} at step {trainer.step}")
    except (ValueError, FileNotFoundError) as err:
        raise click.UsageError(str(err)) from err
    out.mkdir(parents=True, exist_ok=True)
    from napari_virtualstain.core.io.atomic import write_json_atomic

    write_json_atomic(out / "split.json", split.to_dict(), indent=1)
    click.echo(f"{len(split.train)} training, {len(split.tune)} tuning, {len(split.val)} "
               f"validation images (split in {out / 'split.json'})")  # fmt: skip
    with tqdm_progress("nuclei", quiet) as show:
        drain(trainer.fit(), show)
    tuned = finish_training(trainer, samples, split, out / "model", fp16=fp16)
    click.echo(f"tuned on {tuned['tune_tiles']} tiles: {tuned}")
    click.echo(f"model folder: {out / 'model'} (weights.safetensors, nucleus-card.json)")
