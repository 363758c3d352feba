"""Export stage of ``train_demo_model.py``: fp16 demo models, their measured cards, previews.

Kept apart from the training recipe so each file stays small; run through
``train_demo_model.py --export``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

PACKAGE_MODELS = (
    Path(__file__).resolve().parents[1] / "src" / "napari_virtualstain" / "data" / "models"
)
NOTICE = (
    "DEMONSTRATION MODEL - NOT FOR DIAGNOSIS. A small unpaired CycleGAN (about 0.8 M parameters "
    "per generator) trained for about 35 minutes on a CPU from five redistributable images (no "
    "adjacent-section pairs, no pathologist review). It shows what the plug-in does; its stain "
    "is not a Ki-67 assay: without paired supervision, which nuclei it paints brown is not a "
    "measurement of proliferation, and its labelling index must not be used clinically."
)


def to_multiple(rgb: np.ndarray, m: int = 8) -> np.ndarray:
    h, w = (rgb.shape[0] // m) * m, (rgb.shape[1] // m) * m
    return np.ascontiguousarray(rgb[:h, :w])


def translate(module, rgb: np.ndarray) -> np.ndarray:
    """A whole (small) image through a generator, fp32 on the CPU."""
    import torch

    from napari_virtualstain.core.models.inference import from_network, to_network

    with torch.no_grad():
        return from_network(module(to_network(to_multiple(rgb)[None], "cpu")))[0]


def at_half_micron(slide_or_rgb, mpp: float | None) -> np.ndarray:
    """Whole image resampled to 0.5 µm/px (the models' training resolution)."""
    from skimage.transform import rescale

    rgb = np.asarray(slide_or_rgb.levels[0]) if hasattr(slide_or_rgb, "levels") else slide_or_rgb
    if mpp is None or abs(mpp - 0.5) < 0.01:
        return rgb
    out = rescale(rgb, mpp / 0.5, channel_axis=-1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def heldout_metrics(g_ab, g_ba, files) -> dict[str, float]:
    """H&E -> Ki-67 -> H&E reconstruction on held-out tiles (the paper's Fig. 3 metrics)."""
    from napari_virtualstain.core.train.evaluation import image_metrics, mean_metrics
    from napari_virtualstain.core.train.tiles import load_png

    rows = []
    for path in files:
        he = to_multiple(load_png(path))
        rows.append(image_metrics(he, translate(g_ba, translate(g_ab, he))))
    out = mean_metrics(rows, prefix="heldout_he_reconstruction_")
    out.pop("heldout_he_reconstruction_ms_ssim_scales", None)
    out["heldout_tiles"] = float(len(files))
    return out


def labelling_index(virtual_ki67: np.ndarray) -> dict:
    """The plug-in's Ki-67 measurement (built-in segmenter) on a whole image at 0.5 µm/px."""
    from napari_virtualstain.core.ki67_pipeline import measure_rois

    result = measure_rois(virtual_ki67, 0.5).results[0]
    return {"labelling_index": result.labelling_index, "n_nuclei": result.n_nuclei,
            "n_positive": result.n_positive}  # fmt: skip


def samples(work: Path) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (RGB at 0.5 µm/px, stain) of the images the previews and the index use."""
    from napari_virtualstain.core.io import open_slide

    data = Path("/work/shared/data")
    os1 = open_slide(data / "he" / "OS-1-detail_HE.ome.tif")
    cmu = open_slide(data / "he" / "cmu-1-small-region.svs")
    os2 = open_slide(data / "ki67" / "OS-2-ndpi_Ki67.ome.tif")
    histo = open_slide(work / "histo.png")
    return {
        "os1_he": (at_half_micron(os1, os1.mpp), "he"),
        "cmu1_he": (np.asarray(cmu.read_region(0, 1200, 600, 768, 768)), "he"),
        "histo_he": (np.asarray(histo.levels[0]), "he"),
        "os2_ki67": (at_half_micron(os2, os2.mpp)[:768, :768], "ki67"),
    }


def export(work: Path, run: Path, dest_root: Path = PACKAGE_MODELS) -> dict:
    """Round the best epoch's weights to fp16, measure them, write models, card and previews."""
    from napari_virtualstain.core.models import load_model, save_model
    from napari_virtualstain.core.train.layouts import load_unpaired_layout
    from napari_virtualstain.core.train.tiles import save_png

    loaded = {k: load_model(run / "best" / k, device="cpu") for k in ("he2ki67", "ki672he")}
    g_ab, g_ba = (loaded[k].module.half().float().eval() for k in ("he2ki67", "ki672he"))
    layout = load_unpaired_layout(work / "layout")
    metrics = heldout_metrics(g_ab, g_ba, layout.test_a)
    previews, li = work / "previews", {}
    previews.mkdir(exist_ok=True)
    for name, (rgb, stain) in samples(work).items():
        rgb = to_multiple(rgb)
        fwd, back = (g_ab, g_ba) if stain == "he" else (g_ba, g_ab)
        virtual = translate(fwd, rgb)
        save_png(
            previews / f"{name}.png", np.concatenate([rgb, virtual, translate(back, virtual)], 1)
        )
        li[name] = labelling_index(virtual if stain == "he" else rgb)
    timing = json.loads((run / "timing.json").read_text()) if (run / "timing.json").exists() else {}
    counts = json.loads((work / "tile_counts.json").read_text())
    training_data = (
        "Unpaired 256 px tiles at 0.5 µm/px (random 128 px crops). H&E: OpenSlide OS-1 crop "
        "(0.227 µm/px, resampled), OpenSlide CMU-1 small region (CC0), TCGA-CR-7395-01A-01-TS1 "
        "(no pixel size in the file; ~1.0 µm/px estimated from nuclei, upsampled), stardist "
        "histo.jpg (~0.5 µm/px assumed). Ki-67: OpenSlide OS-2 crop (0.227 µm/px, resampled). "
        f"Tiles per source: {json.dumps(counts)}. Held out: the bottom 20 % band of CMU-1 and TCGA."
    )
    written = {}
    for key, module in (("he2ki67", g_ab), ("ki672he", g_ba)):
        card = loaded[key].card
        card_metrics = dict(metrics)
        if key == "he2ki67":
            card_metrics.update({f"labelling_index_virtual_{n}": v["labelling_index"]
                                 for n, v in li.items() if n.endswith("_he")})  # fmt: skip
        else:
            card_metrics["labelling_index_real_os2_ki67"] = li["os2_ki67"]["labelling_index"]
        notes = (
            f"{NOTICE} Trained on CPU (1 thread, shared 2-core machine): {timing.get('steps', '?')}"
            f" steps at {timing.get('steps_per_s', float('nan')):.3f} steps/s; best epoch by "
            "held-out H&E reconstruction SSIM. Metrics: held-out H&E -> Ki-67 -> H&E "
            "reconstruction (fp16 weights); labelling_index_* = built-in Ki-67 measurement "
            "(fraction of DAB-positive nuclei) on the virtual Ki-67 of each H&E sample at "
            "0.5 µm/px, and on the real OS-2 Ki-67 crop for reference. Recipe: "
            "scripts/train_demo_model.py. " + card.notes
        )
        card = replace(card, name=f"demo-{key}", training_data=training_data,
                       metrics=card_metrics, notes=notes, magnification=20.0)  # fmt: skip
        written[key] = save_model(module.half(), card, dest_root / f"demo-{key}", overwrite=True)
        module.float()
    summary = {"metrics": metrics, "labelling_index": li, "timing": timing}
    (work / "export_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
