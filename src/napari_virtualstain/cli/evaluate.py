"""``virtualstain eval``: the seeds' metrics from the command line.

Each sub-command prints a table (mean ± sd, as the seeds report), writes ``metrics.json`` and PNG
plots into ``--out``. All numbers come from :mod:`napari_virtualstain.core.metrics`, the same code
the QA widget and the trainers use.
"""

from __future__ import annotations

import contextlib
import csv
import math
import pickle
from pathlib import Path

import click
import numpy as np

from ._params import MPP, OUTPUT_FOLDER

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
RATIO_KEYS = ("name", "roi", "id", "image", "slide")
RATIO_COLUMNS = ("area_ratio", "ratio", "labelling_index", "ki67_ratio")


def _out_option(f):
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder for metrics.json and the PNG plots (default: ./eval-<command>).",
    )(f)


def _prepare_out(out_dir: Path | None, command: str, inputs: list[Path]) -> Path:
    """Check ``--out`` before any work; it is created only when the results are written."""
    out = Path(out_dir or f"eval-{command}").resolve()
    for p in inputs:
        # never write results over (or into) what was given as input
        if out == Path(p).resolve() or Path(p).resolve() in (out / "metrics.json",):
            raise click.ClickException(f"--out {out} is an input; choose another folder")
    return OUTPUT_FOLDER.convert(out, None, None)


@contextlib.contextmanager
def _atomic_file(out: Path, name: str):
    """A temporary path for ``out/name``, renamed into place when the writer succeeds."""
    from napari_virtualstain.core.io.atomic import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / name) as tmp:
        yield tmp


def _write_json(out: Path, payload: dict) -> Path:
    from napari_virtualstain.core.io.atomic import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)  # JSON has no inf / nan
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    return write_json_atomic(path, clean(payload))


def _read_rgb(path: Path) -> np.ndarray:
    from napari_virtualstain.core.io import open_slide

    try:
        return np.asarray(open_slide(path).levels[0].compute())
    except Exception as err:
        raise click.ClickException(f"{path}: cannot read as an RGB image ({err})") from err


def _image_items(path: Path, tile_px: int) -> dict[str, np.ndarray]:
    """name -> RGB: each image of a folder, or the level-0 tiles of one slide / OME-Zarr."""
    path = Path(path)
    if path.is_dir() and not (path / "zarr.json").exists() and not (path / ".zgroup").exists():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise click.ClickException(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return {p.stem: _read_rgb(p) for p in files}
    from napari_virtualstain.core.geometry import TileGrid

    img = _read_rgb(path)
    grid = TileGrid(img.shape[:2], tile_px)
    cores = (grid.core(*t) for t in grid.tiles())
    # whole tiles only: metrics over tiles of one size compare like with like
    full = [b for b in cores if b.shape == (tile_px, tile_px)]
    return {f"y{b.y}_x{b.x}": img[b.slices] for b in full} or {path.stem: img}


def _paired(gen: dict, ref: dict) -> list[str]:
    names = sorted(set(gen) & set(ref))
    if not names:
        raise click.ClickException(
            f"no image names in common (generated: {sorted(gen)[:3]}..., reference: "
            f"{sorted(ref)[:3]}...); paired evaluation matches files by name"
        )
    return names


def _image_quality(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from napari_virtualstain.core.metrics import mae, ms_ssim, psnr, ssim

    if a.shape != b.shape:
        raise click.ClickException(f"image sizes differ: {a.shape} vs {b.shape}")
    try:
        ms = ms_ssim(a, b)
    except ValueError:
        ms = math.nan  # smaller than MS-SSIM's 176 px: reported as n/a
    return {"ssim": ssim(a, b), "ms_ssim": ms, "psnr_db": psnr(a, b), "mae": mae(a, b)}


def _summary_table(per_item: dict[str, dict[str, float]], metrics: list[str]) -> tuple[str, dict]:
    from napari_virtualstain.core.metrics.report import fmt_mean_sd, format_table, mean_sd

    rows, summary = [], {}
    for m in metrics:
        vals = [d[m] for d in per_item.values()]
        mean, sd = mean_sd(vals)
        summary[m] = {"mean": mean, "sd": sd, "n": len(vals)}
        rows.append([m, fmt_mean_sd(vals)])
    return format_table(["metric", "mean ± sd"], rows), summary


@click.group("eval")
def eval_group() -> None:
    """Evaluate virtual stains, cycle reconstructions, segmentations and Ki-67 ratios."""


@eval_group.command("stain")
@click.option("--generated", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--reference", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--paired/--unpaired", default=True, help="Paired: pixel metrics; else P-hash.")
@click.option("--tile-px", default=512, show_default=True, help="Tiles of a single slide.")
@click.option(
    "--phash-weights",
    default="imagenet",
    show_default=True,
    help="ResNet-18 weights: imagenet, a .pth/.safetensors file, or random (tests).",
)
@_out_option
def stain_cmd(generated, reference, paired, tile_px, phash_weights, out_dir) -> None:
    """Compare virtual stains with real ones (folders matched by file name, or slides)."""
    out = _prepare_out(out_dir, "stain", [generated, reference])
    gen, ref = _image_items(generated, tile_px), _image_items(reference, tile_px)
    if paired:
        names = _paired(gen, ref)
        per_item = {n: _image_quality(gen[n], ref[n]) for n in names}
        table, summary = _summary_table(per_item, ["ssim", "ms_ssim", "psnr_db", "mae"])
        payload = {"mode": "paired", "summary": summary, "per_image": per_item}
        from napari_virtualstain.core.metrics.report import plot_per_item

        with _atomic_file(out, "paired_metrics.png") as png:
            plot_per_item(
                {m: [d[m] for d in per_item.values()] for m in summary},
                png,
                "paired image quality",
            )
    else:
        payload, table = _unpaired(gen, ref, phash_weights, out)
    click.echo(table)
    click.echo(f"written: {_write_json(out, payload)} and PNG plots in {out}")


def _unpaired(gen: dict, ref: dict, weights: str, out: Path) -> tuple[dict, str]:
    from scipy.stats import ks_2samp, wasserstein_distance

    from napari_virtualstain.core.metrics import PHasher, dab_fraction, hash_correlation
    from napari_virtualstain.core.metrics.report import fmt_mean_sd, format_table, plot_histograms

    try:
        hasher = PHasher(weights)
        ref_hash = hasher.hash_vector(np.mean([hasher.features(r) for r in ref.values()], axis=0))
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    except pickle.UnpicklingError as err:
        raise click.ClickException(
            f"{weights}: refused: the file needs pickle code execution to load; only plain "
            "tensor files (.safetensors, or a .pth of tensors) are read"
        ) from err
    phash = {n: hash_correlation(hasher.hash(g), ref_hash) for n, g in gen.items()}
    dab = {
        "generated": [dab_fraction(g) for g in gen.values()],
        "reference": [dab_fraction(r) for r in ref.values()],
    }
    ks = ks_2samp(dab["generated"], dab["reference"])
    rows = [
        ["P-hash correlation vs reference set", fmt_mean_sd(list(phash.values()))],
        ["DAB fraction, generated", fmt_mean_sd(dab["generated"])],
        ["DAB fraction, reference", fmt_mean_sd(dab["reference"])],
        ["DAB fraction KS statistic (p)", f"{ks.statistic:.4f} ({ks.pvalue:.3g})"],
        ["DAB fraction Wasserstein", f"{wasserstein_distance(*dab.values()):.4f}"],
    ]
    with _atomic_file(out, "dab_fraction.png") as png:
        plot_histograms(
            dab,
            png,
            "DAB-positive fraction of tissue",
            "DAB fraction, generated vs reference",
        )
    table = format_table(["metric", "value"], rows) + f"\nP-hash weights: {hasher.weights_used}"
    payload = {
        "mode": "unpaired",
        "phash_weights": hasher.weights_used,
        "phash": phash,
        "dab_fraction": dab,
        "dab_ks": {"statistic": ks.statistic, "p": ks.pvalue},
        "dab_wasserstein": wasserstein_distance(*dab.values()),
    }
    return payload, table


@eval_group.command("cycle")
@click.option("--model", "model_ab", required=True, help="Forward generator (A2B).")
@click.option("--reverse", "model_ba", required=True, help="Backward generator (B2A).")
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Folder of domain-A images.",
)
@click.option("--mpp", type=MPP, default=None, help="µm/px of the images (default: the card's).")
@_out_option
def cycle_cmd(model_ab, model_ba, images, mpp, out_dir) -> None:
    """Reconstruction metrics of A -> B -> A (seed 000, Fig. 3), per image and mean ± sd."""
    from napari_virtualstain.core.metrics.report import format_table, plot_per_item
    from napari_virtualstain.core.models import load_model
    from napari_virtualstain.core.progress import Progress
    from napari_virtualstain.core.residual import as_rgb_function

    from .progress import tqdm_progress

    out = _prepare_out(out_dir, "cycle", [images])
    try:
        fwd, back = load_model(model_ab, device="cpu"), load_model(model_ba, device="cpu")
    except Exception as err:
        raise click.ClickException(f"cannot load the generator pair: {err}") from err
    f, b = as_rgb_function(fwd, mpp), as_rgb_function(back, mpp)
    items = _image_items(images, tile_px=10**9)
    per_item = {}
    with tqdm_progress("reconstructing", unit="image") as on_progress:
        for i, (name, img) in enumerate(items.items()):
            per_item[name] = _image_quality(img, b(f(img)))
            on_progress(Progress(i + 1, len(items), name))
    table, summary = _summary_table(per_item, ["ssim", "ms_ssim", "psnr_db", "mae"])
    click.echo(
        format_table(
            ["image", "ssim", "ms_ssim", "psnr_db", "mae"],
            [[n, *d.values()] for n, d in per_item.items()],
        )
    )
    click.echo(table)
    with _atomic_file(out, "cycle_metrics.png") as png:
        plot_per_item(
            {m: [d[m] for d in per_item.values()] for m in summary},
            png,
            "cycle reconstruction A -> B -> A",
        )
    payload = {
        "model": str(model_ab),
        "reverse": str(model_ba),
        "summary": summary,
        "per_image": per_item,
    }
    click.echo(f"written: {_write_json(out, payload)} and PNG plots in {out}")


def _read_labels(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)  # object arrays would need pickle: refused
        else:
            from skimage.io import imread

            arr = imread(path)
    except Exception as err:  # each reader raises its own types for empty or corrupt files
        reason = "holds Python objects (pickle), not numbers" if "allow_pickle" in str(err) else err
        raise click.ClickException(f"{path}: cannot read as a label image ({reason})") from err
    arr = np.asarray(arr)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise click.ClickException(
            f"{path}: expected a 2-D integer label image, found {arr.shape} {arr.dtype}"
        )
    return arr


def _label_items(path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in LABEL_SUFFIXES)
        if not files:
            raise click.ClickException(f"{path}: no label images ({', '.join(LABEL_SUFFIXES)})")
        return {p.stem: _read_labels(p) for p in files}
    return {path.stem: _read_labels(path)}


@eval_group.command("seg")
@click.option("--pred", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--truth", type=click.Path(exists=True, path_type=Path), required=True)
@_out_option
def seg_cmd(pred, truth, out_dir) -> None:
    """Dice, accuracy, precision, recall, F1 at IoU 0.5 and the curve over IoU 0.5-0.95."""
    from napari_virtualstain.core.metrics import IOU_THRESHOLDS, dice, f1_curve, pooled_curve
    from napari_virtualstain.core.metrics.report import format_table, plot_curves

    out = _prepare_out(out_dir, "seg", [pred, truth])
    p_items, t_items = _label_items(pred), _label_items(truth)
    names = _paired(p_items, t_items) if len(p_items) > 1 or len(t_items) > 1 else None
    pairs = (
        [(n, p_items[n], t_items[n]) for n in names]
        if names
        else [(next(iter(p_items)), next(iter(p_items.values())), next(iter(t_items.values())))]
    )
    per_item, curves = {}, []
    for name, p, t in pairs:
        if p.shape != t.shape:
            raise click.ClickException(
                f"{name}: the label images differ in size: {pred} {p.shape}, {truth} {t.shape}"
            )
        curve = f1_curve(p, t)
        per_item[name] = {
            "dice": dice(p, t),
            **{
                k: curve[0].to_dict()[k]
                for k in ("accuracy", "precision", "recall", "f1", "tp", "fp", "fn")
            },
        }
        curves.append(curve)
    counts = pooled_curve(curves)  # counts summed over images before the ratios
    pooled = {k: counts[k] for k in ("accuracy", "precision", "recall", "f1")}
    table, summary = _summary_table(per_item, ["dice", "accuracy", "precision", "recall", "f1"])
    click.echo(table)
    click.echo(
        format_table(
            ["IoU", "accuracy", "precision", "recall", "f1"],
            [[t, *(pooled[k][i] for k in pooled)] for i, t in enumerate(IOU_THRESHOLDS)],
        )
    )
    with _atomic_file(out, "iou_curve.png") as png:
        plot_curves(
            IOU_THRESHOLDS,
            pooled,
            png,
            "IoU threshold",
            "object matching over IoU thresholds",
        )
    payload = {
        "summary_at_iou_0.5": summary,
        "per_image": per_item,
        "iou_curve": {
            "iou": list(IOU_THRESHOLDS),
            **pooled,
            **{k: counts[k] for k in ("tp", "fp", "fn")},
        },
    }
    click.echo(f"written: {_write_json(out, payload)} and PNG plots in {out}")


def _read_ratio_csv(path: Path, column: str | None, key: str | None) -> tuple[list, np.ndarray]:
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise click.ClickException(
            f"{path}: not UTF-8 text (byte {err.start}); save the CSV as UTF-8"
        ) from err
    except csv.Error as err:
        raise click.ClickException(f"{path}: not a readable CSV ({err})") from err
    if not rows:
        raise click.ClickException(f"{path}: no rows")
    cols = list(reader.fieldnames or [])
    for line, row in enumerate(rows, start=2):
        if None in row.values() or None in row:
            raise click.ClickException(
                f"{path}: row {line} has {len([v for v in row.values() if v is not None])} "
                f"fields, the header has {len(cols)}"
            )
    col = column or next((c for c in RATIO_COLUMNS if c in cols), None)
    if col not in cols:
        raise click.ClickException(
            f"{path}: no ratio column (looked for {column or ', '.join(RATIO_COLUMNS)}; "
            f"found {', '.join(cols)}); pass --column"
        )
    k = key or next((c for c in RATIO_KEYS if c in cols), None)
    try:
        values = np.asarray([float(r[col]) for r in rows])
    except ValueError as err:
        raise click.ClickException(f"{path}: column {col!r} is not numeric ({err})") from err
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0) | (values > 1))
    if bad.size:
        raise click.ClickException(
            f"{path}: row {bad[0] + 2} has {col} = {rows[bad[0]][col]!r}; ratios are fractions "
            "in [0, 1]"
        )
    keys = [r[k] for r in rows] if k in cols else list(range(len(rows)))
    seen: dict = {}
    for line, name in enumerate(keys, start=2):
        if name in seen:
            raise click.ClickException(
                f"{path}: key {name!r} appears twice (rows {seen[name]} and {line}); pairs "
                "would be ambiguous"
            )
        seen[name] = line
    return keys, values


@eval_group.command("ratio")
@click.option("--pred", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option(
    "--truth", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--column", default=None, help=f"Ratio column (default: first of {RATIO_COLUMNS}).")
@click.option("--key", default=None, help=f"Row key (default: first of {RATIO_KEYS}, else order).")
@_out_option
def ratio_cmd(pred, truth, column, key, out_dir) -> None:
    """Threshold accuracies (|Δ| < 0.05, 0.1, 0.2), MSE, MAE and the 3-bin confusion matrix."""
    from napari_virtualstain.core.metrics import ratio_metrics
    from napari_virtualstain.core.metrics.ratio import BIN_LABELS
    from napari_virtualstain.core.metrics.report import (
        format_table,
        plot_confusion,
        plot_ratio_scatter,
    )

    out = _prepare_out(out_dir, "ratio", [pred, truth])
    p_keys, p_vals = _read_ratio_csv(pred, column, key)
    t_keys, t_vals = _read_ratio_csv(truth, column, key)
    t_index = {k: i for i, k in enumerate(t_keys)}
    common = [i for i, k in enumerate(p_keys) if k in t_index]
    if not common:
        raise click.ClickException(f"no rows of {pred} match {truth} by key")
    p = p_vals[common]
    t = t_vals[[t_index[p_keys[i]] for i in common]]
    try:
        m = ratio_metrics(p, t)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    rows = [[f"|Δ| < {k:g}", v] for k, v in m.within.items()]
    rows += [["MSE", m.mse], ["MAE", m.mae], ["pairs", m.n]]
    click.echo(format_table(["metric", "value"], rows))
    click.echo(
        format_table(
            ["true \\ pred", *BIN_LABELS], [[BIN_LABELS[i], *m.confusion[i]] for i in range(3)]
        )
    )
    with _atomic_file(out, "confusion.png") as png:
        plot_confusion(m.confusion, BIN_LABELS, png, "Ki-67 ratio bins")
    with _atomic_file(out, "ratio_scatter.png") as png:
        plot_ratio_scatter(p, t, png)
    payload = {
        **m.to_dict(),
        "pairs": [
            {"key": str(p_keys[i]), "pred": float(pv), "true": float(tv)}
            for i, pv, tv in zip(common, p, t, strict=True)
        ],
    }
    click.echo(f"written: {_write_json(out, payload)} and PNG plots in {out}")
