"""``virtualstain eval``: the seeds' metrics from the command line.

Each sub-command prints a table (mean ± sd, as the seeds report), writes ``metrics.json`` and PNG
plots into ``--out``. All numbers come from :mod:`napari_virtualstain.core.metrics`, the same code
the QA widget and the trainers use.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import click
import numpy as np

from ._eval_io import (
    RATIO_COLUMNS,
    RATIO_KEYS,
    _atomic_file,
    _image_items,
    _label_items,
    _prepare_out,
    _read_ratio_csv,
    _write_json,
)
from ._params import MPP


def _out_option(f):
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder for metrics.json and the PNG plots (default: ./eval-<command>).",
    )(f)


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


METRIC_UNITS = {
    "ssim": "1 = identical (Gaussian window, sigma 1.5, per channel)",
    "ms_ssim": "1 = identical",
    "psnr_db": "dB, peak 255 (infinite for identical images: counted in n_inf)",
    "mae": "grey levels of 255",
}


def _summary_table(per_item: dict[str, dict[str, float]], metrics: list[str]) -> tuple[str, dict]:
    import math

    from napari_virtualstain.core.metrics.report import fmt_mean_sd, format_table, mean_sd

    rows, summary = [], {}
    for m in metrics:
        vals = [d[m] for d in per_item.values()]
        mean, sd = mean_sd(vals)
        n_inf = sum(1 for v in vals if v is not None and math.isinf(v))
        n = sum(1 for v in vals if v is not None and math.isfinite(v))
        # the same counts as the printed table: the mean is over the finite values only
        summary[m] = {"mean": mean, "sd": sd, "n": n, "n_inf": n_inf,
                      "n_missing": len(vals) - n - n_inf}  # fmt: skip
        if m in METRIC_UNITS:
            summary[m]["unit"] = METRIC_UNITS[m]
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
    unmatched = _unmatched_keys(p_keys, t_keys)
    if unmatched["pred_only"]["n"] or unmatched["truth_only"]["n"]:
        click.echo(f"warning: {_describe_unmatched(unmatched, len(common))}", err=True)
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
        "unmatched": unmatched,
        "pairs": [
            {"key": str(p_keys[i]), "pred": float(pv), "true": float(tv)}
            for i, pv, tv in zip(common, p, t, strict=True)
        ],
    }
    click.echo(f"written: {_write_json(out, payload)} and PNG plots in {out}")


def _unmatched_keys(p_keys: list, t_keys: list) -> dict[str, dict]:
    """Rows left out of the pairs: keys only in the prediction, and only in the truth."""
    t_set, p_set = set(t_keys), set(p_keys)
    pred_only = [str(k) for k in p_keys if k not in t_set]
    truth_only = [str(k) for k in t_keys if k not in p_set]
    return {
        "pred_only": {"n": len(pred_only), "keys": pred_only},
        "truth_only": {"n": len(truth_only), "keys": truth_only},
    }


def _describe_unmatched(unmatched: dict[str, dict], n_pairs: int, shown: int = 5) -> str:
    """One line: how many rows of each side have no partner, naming the first few keys."""
    parts = []
    for side, label in (("pred_only", "--pred"), ("truth_only", "--truth")):
        keys, n = unmatched[side]["keys"], unmatched[side]["n"]
        if n:
            more = f" and {n - shown} more" if n > shown else ""
            parts.append(f"{n} row(s) only in {label} ({', '.join(keys[:shown])}{more})")
    return f"{'; '.join(parts)}; left out, metrics use the {n_pairs} matched pair(s)"
