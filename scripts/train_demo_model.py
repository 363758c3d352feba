"""Reproducible recipe for the shipped demo model pair (H&E <-> Ki-67, unpaired CycleGAN).

Run from the repository root::

    .venv/bin/python scripts/train_demo_model.py --work /tmp/demo_train --minutes 35
    .venv/bin/python scripts/train_demo_model.py --work /tmp/demo_train --export

Steps: (1) cut 256 px tiles at 0.5 µm/px from the redistributable samples in /work/shared/data
(H&E: OS-1 crop, CMU-1 small region, the TCGA slide, stardist's histo.jpg; Ki-67: OS-2 crop) and
hold out the bottom 20 % of each slide (tiles touching that band are not trained on;
slides too small for such a band, OS-1 and histo.jpg, are all training data); (2) train
the paper's generator at reduced width (ngf 8, 10 blocks; skip + SSIM variant, λ = β = 5) on
random 128 px crops, one CPU thread, until the epochs or the time budget run out. Departures from
the paper, for a CPU budget of ~35 minutes: batch 2 (more updates per minute), a narrower
discriminator (ndf 16: at ndf 32 it overpowered the small generators, whose Ki-67 came out
colour-inverted) and identity loss 0.5 (keeps glass white in both directions); (3) export the best epoch (held-out
reconstruction SSIM) as fp16 safetensors + model cards into the package (``--export``), with the
held-out metrics and Ki-67 labelling indices measured on the fp16 weights, and preview PNGs
(sample | translated | reconstructed) in --work/previews (scripts/_demo_export.py).

Seed, tile lists and the config are written to the run folder, so a rerun with the same
``--epochs`` gives the same model on the same torch build.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data")
HE_SOURCES = {  # name -> (path or "stardist", source mpp override, max training tiles)
    "os1": (DATA / "he" / "OS-1-detail_HE.ome.tif", None, None),
    "cmu1": (DATA / "he" / "cmu-1-small-region.svs", None, 160),
    # TCGA slide: no pixel size in the file; ~1.0 µm/px estimated from its nuclei (~8 px).
    "tcga": (DATA / "he" / "tcga-cr-7395-01a-01-ts1.svs", 1.0, 80),
    "histo": ("stardist", 0.5, None),  # nuclei ~15-20 px: about 0.5 µm/px
}
KI67_SOURCE = DATA / "ki67" / "OS-2-ndpi_Ki67.ome.tif"
HOLDOUT = 0.2
TILE_PX, STRIDE_PX, CROP_PX, MPP = 256, 64, 128, 0.5


def open_source(path, work: Path):
    from napari_virtualstain.core.io import open_slide

    if path == "stardist":
        from stardist.data import test_image_he_2d

        from napari_virtualstain.core.train.tiles import save_png

        png = work / "histo.png"
        save_png(png, test_image_he_2d())
        return open_slide(png)
    return open_slide(path)


def cut(slide, out: Path, source_mpp, stride_px: int) -> list:
    from napari_virtualstain.core.train.tiles import TileSpec, extract_tiles, read_index

    if (out / "index.csv").is_file():  # tiles of an earlier run of this recipe
        return read_index(out)
    spec = TileSpec(TILE_PX, TILE_PX - stride_px, MPP, min_tissue=0.6)
    return extract_tiles([slide], out, spec, source_mpp=source_mpp)


def split_band(records, slide, source_mpp, cap, rng) -> tuple[list, list]:
    """Test = tiles inside the bottom band; train = tiles not touching it (capped, random)."""
    level_h = slide.levels[records[0].level].shape[0] if records else 0
    band = (1 - HOLDOUT) * level_h
    test = [r for r in records if r.y >= band]
    train = [r for r in records if r.y + r.read_px <= band]
    if not test:  # too small for a held-out band (OS-1, histo.jpg): all of it trains
        train = list(records)
    if cap is not None and len(train) > cap:
        train = [train[i] for i in sorted(rng.choice(len(train), cap, replace=False))]
    return train, test


def prepare(work: Path, rng) -> dict:
    """Cut tiles and build an unpaired layout under work/layout; returns tile counts."""
    layout, counts = work / "layout", {}
    if layout.exists():
        shutil.rmtree(layout)
    for d in ("trainA", "trainB", "testA", "testB"):
        (layout / d).mkdir(parents=True)
    jobs = [(k, *v, "A") for k, v in HE_SOURCES.items()] + [("os2", KI67_SOURCE, None, None, "B")]
    for name, path, source_mpp, cap, side in jobs:
        slide = open_source(path, work)
        # few Ki-67 and OS-1 tiles exist: a denser grid gives more distinct crops
        stride = {"os2": 64, "os1": 64, "histo": 64, "cmu1": 128, "tcga": 256}[name]
        records = cut(slide, work / "tiles" / name, source_mpp, stride)
        train, test = split_band(records, slide, source_mpp, cap, rng)
        for part, recs in (("train", train), ("test", test)):
            for r in recs:
                shutil.copyfile(work / "tiles" / name / r.file, layout / f"{part}{side}" / r.file)
        counts[name] = {"train": len(train), "test": len(test), "all": len(records)}
        print(f"{name}: {len(records)} tiles, {len(train)} train, {len(test)} held out", flush=True)
    return counts


def train(work: Path, args) -> Path:
    from napari_virtualstain.core.train.cyclegan import CycleGANConfig, CycleGANTrainer
    from napari_virtualstain.core.train.layouts import load_unpaired_layout

    config = CycleGANConfig(
        variant="skip+ssim", ngf=args.ngf, n_blocks=10, ndf=16, tile_px=CROP_PX,
        batch_size=args.batch_size, lambda_identity=0.5, epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, max_eval_tiles=24, seed=args.seed, mpp=MPP,
        name="demo",
    )  # fmt: skip
    data = load_unpaired_layout(work / "layout")
    run = work / "run"
    trainer = CycleGANTrainer(config, data, run, "cpu")
    if trainer.resume_if_possible():
        print(f"resumed at epoch {trainer.epoch} step {trainer.step}", flush=True)
    start, steps, step_t0 = time.time(), 0, time.time()
    for progress in trainer.fit():
        if progress.phase == "train":
            steps += 1
            if progress.step % 10 == 0:
                rate = steps / (time.time() - step_t0)
                losses = " ".join(f"{k}={v:.3f}" for k, v in progress.losses.items())
                print(f"epoch {progress.epoch + 1} step {progress.step}/{progress.steps_per_epoch}"
                      f" {rate:.3f} steps/s {losses}", flush=True)  # fmt: skip
        else:
            shown = {k: round(v, 4) for k, v in progress.metrics.items()}
            print(f"EPOCH {json.dumps(shown)}", flush=True)
            if time.time() - start > args.minutes * 60:
                print("time budget reached; stopping after this epoch", flush=True)
                break
    elapsed = time.time() - start
    (run / "timing.json").write_text(
        json.dumps({"train_seconds": elapsed, "steps": steps, "steps_per_s": steps / elapsed})
    )
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/demo_train"))
    parser.add_argument("--minutes", type=float, default=35.0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--ngf", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-prepare", action="store_true")
    parser.add_argument("--export", action="store_true",
                        help="Only export the best epoch of --work/run to --export-to.")  # fmt: skip
    parser.add_argument("--export-to", type=Path, help="Default: the package's data/models.")
    args = parser.parse_args()
    import torch

    # one thread: on a shared 2-core machine two threads spin-wait on each other (10x slower)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.export:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from _demo_export import PACKAGE_MODELS, export

        summary = export(args.work, args.work / "run", args.export_to or PACKAGE_MODELS)
        print(json.dumps(summary, indent=2))
        return
    if not args.skip_prepare:
        counts = prepare(args.work, np.random.default_rng(args.seed))
        (args.work / "tile_counts.json").write_text(json.dumps(counts, indent=2))
    run = train(args.work, args)
    print(f"run folder: {run}", flush=True)


if __name__ == "__main__":
    main()
