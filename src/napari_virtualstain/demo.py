"""The headless demo: every step the plugin offers, run on the bundled samples, written to a folder.

Pure (no napari/Qt), so it runs on servers and CI. Steps:

1. the sample slides as OME-Zarr pyramids, thumbnails and a level/mpp summary;
2. virtual Ki-67 of the H&E sample and virtual H&E of the Ki-67 sample (the shipped demo pair);
3. the Ki-67 ratio on the real Ki-67, on the virtual Ki-67, and by seed 003's route;
4. QA: the H&E's cycle reconstruction with its residual and SSIM maps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_virtualstain.core.geometry import level_for_size
from napari_virtualstain.core.io import open_slide, write_ome_zarr
from napari_virtualstain.core.io.formatting import format_summary
from napari_virtualstain.core.samples import SAMPLES, sample_path

THUMBNAIL_MAX_SIDE_PX = 1024
HE_TO_KI67 = "demo-he2ki67"
KI67_TO_HE = "demo-ki672he"

Log = Callable[[str], None]


def save_png(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path)
    return path


def thumbnail(slide, max_side_px: int = THUMBNAIL_MAX_SIDE_PX) -> np.ndarray:
    """The finest level that fits in ``max_side_px``, subsampled to fit exactly."""
    level = level_for_size([lv.shape for lv in slide.levels], max_px=max_side_px)
    arr = np.asarray(slide.levels[level].compute())
    step = max(1, int(np.ceil(max(arr.shape[:2]) / max_side_px)))
    return arr[::step, ::step]


def side_by_side(*images: np.ndarray, gap_px: int = 8) -> np.ndarray:
    h = max(im.shape[0] for im in images)
    parts = []
    for im in images:
        pad = np.full((h, im.shape[1] + gap_px, 3), 255, np.uint8)
        pad[: im.shape[0], : im.shape[1]] = im
        parts.append(pad)
    return np.concatenate(parts, axis=1)[:, :-gap_px]


def demo_slides(out: Path, log: Log) -> tuple[list[Path], dict]:
    written, summaries = [], {}
    for key in SAMPLES:
        start = time.perf_counter()
        slide = open_slide(sample_path(key))
        summary = slide.summary()
        summary["open_seconds"] = round(time.perf_counter() - start, 4)
        summaries[key] = summary
        log(format_summary(summary))
        zarr_path = write_ome_zarr(
            out / f"{slide.name}.ome.zarr",
            slide.levels[0],
            slide.mpp,
            name=slide.name,
            metadata={"source": str(slide.path), "magnification": slide.magnification},
            overwrite=True,
        )
        written += [zarr_path, save_png(out / f"{slide.name}_thumbnail.png", thumbnail(slide))]
        log(f"  -> {zarr_path.name}, {slide.name}_thumbnail.png\n")
    summary_path = out / "slides.json"
    summary_path.write_text(json.dumps(summaries, indent=2))
    return [*written, summary_path], summaries


def demo_virtual_stains(out: Path, log: Log) -> tuple[list[Path], dict[str, np.ndarray]]:
    """Virtual Ki-67 of the H&E sample and virtual H&E of the Ki-67 sample, as OME-Zarr."""
    from napari_virtualstain.core.engine import stain_slide

    written, images = [], {}
    for key, model, label in (
        ("he", HE_TO_KI67, "virtual-ki67"),
        ("ki67", KI67_TO_HE, "virtual-he"),
    ):
        source = open_slide(sample_path(key))
        target = out / f"{source.name}.{label}.ome.zarr"
        log(f"Staining {source.name} with {model} ...")
        result = stain_slide(source, model, target, overwrite=True)
        log(f"  {result.summary()}")
        virtual = np.asarray(open_slide(target).levels[0].compute())
        real = np.asarray(source.levels[0].compute())
        images[key], images[label] = real, virtual
        preview = out / f"{source.name}.{label}.png"
        save_png(preview, side_by_side(real[::2, ::2], virtual[::2, ::2]))
        written += [target, preview]
    return written, images


def demo_ratio(out: Path, images: dict[str, np.ndarray], log: Log) -> list[Path]:
    """Ki-67 ratio: real Ki-67, virtual Ki-67 of the H&E, and seed 003's route on the real Ki-67."""
    from napari_virtualstain.core.ki67.pipeline import measure_rois

    mpp = open_slide(sample_path("ki67")).mpp
    runs = {
        "real Ki-67 (OS-2)": measure_rois(images["ki67"], mpp),
        "virtual Ki-67 of the H&E (OS-1)": measure_rois(images["virtual-ki67"], mpp),
        "seed 003: nuclei on the virtual H&E, DAB of the real Ki-67 (OS-2)": measure_rois(
            images["virtual-he"], mpp, measure_image=images["ki67"], segment_he=True
        ),
    }
    report = {}
    for name, run in runs.items():
        result = run.results[0]
        report[name] = {**result.to_dict(), "provenance": run.provenance}
        log(
            f"  {name}: {result.n_positive}/{result.n_nuclei} positive, labelling index "
            f"{result.labelling_index:.3f}, area ratio {result.area_ratio:.3f}, bin {result.bin}, "
            f"WHO {result.who_grade}"
        )
    real_run = runs["real Ki-67 (OS-2)"]
    overlay = out / "OS-2-ndpi_Ki67.nuclei.png"
    save_png(overlay, nuclei_overlay(images["ki67"], real_run))
    path = out / "ratio.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return [path, overlay]


def nuclei_overlay(rgb: np.ndarray, run) -> np.ndarray:
    """Nucleus outlines on the image: red positive, blue negative."""
    from skimage.segmentation import find_boundaries

    labels, (y0, x0) = run.labels_union()
    out = rgb.copy()
    view = out[y0 : y0 + labels.shape[0], x0 : x0 + labels.shape[1]]
    nuclei = run.measurements[0].nuclei
    positive = np.zeros(int(labels.max()) + 1, bool)
    positive[np.asarray(nuclei.label)[np.asarray(nuclei.positive, bool)]] = True
    edges = find_boundaries(labels, mode="inner")
    view[edges & positive[labels]] = (220, 20, 20)
    view[edges & ~positive[labels]] = (20, 60, 230)
    return out


def demo_qa(out: Path, images: dict[str, np.ndarray], log: Log) -> list[Path]:
    """Cycle reconstruction of the H&E (H&E -> virtual Ki-67 -> H&E) with residual maps."""
    from napari_virtualstain.core.engine import stain_image
    from napari_virtualstain.core.metrics import mae, psnr, ssim
    from napari_virtualstain.core.models import load_model
    from napari_virtualstain.core.residual import residual_map

    mpp = open_slide(sample_path("he")).mpp
    he = images["he"]
    reconstruction = stain_image(load_model(KI67_TO_HE), images["virtual-ki67"], mpp=mpp)
    numbers = {
        "ssim": ssim(he, reconstruction),
        "psnr_db": psnr(he, reconstruction),
        "mae": mae(he, reconstruction),
    }
    log(
        f"  H&E cycle reconstruction: SSIM {numbers['ssim']:.3f}, PSNR {numbers['psnr_db']:.2f} dB, "
        f"MAE {numbers['mae']:.2f}"
    )
    residual = residual_map("rgb", he, reconstruction)
    ssim_local = residual_map("ssim", he, reconstruction)
    png = out / "OS-1-detail_HE.cycle-qa.png"
    save_png(png, side_by_side(he, reconstruction, diverging_rgb(residual), grey_rgb(ssim_local)))
    numbers["mean_abs_rgb_residual"] = float(np.abs(residual).mean())
    numbers["panels"] = "H&E | reconstruction | signed RGB residual (blue-white-red) | local SSIM"
    path = out / "qa.json"
    path.write_text(json.dumps(numbers, indent=2))
    return [path, png]


def diverging_rgb(values: np.ndarray) -> np.ndarray:
    """Signed map to blue (negative) - white (0) - red (positive), symmetric limits."""
    limit = float(np.percentile(np.abs(values), 99)) or 1.0
    t = np.clip(values / limit, -1, 1)[..., None]
    white = np.array([255.0, 255.0, 255.0])
    red, blue = np.array([200.0, 30.0, 30.0]), np.array([30.0, 60.0, 200.0])
    rgb = np.where(t >= 0, white + t * (red - white), white - t * (blue - white))
    return rgb.astype(np.uint8)


def grey_rgb(values: np.ndarray) -> np.ndarray:
    grey = (np.clip(values, 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def run_headless_demo(out: Path, log: Log = print, full: bool = True) -> list[Path]:
    """Run the demo into ``out``; ``full=False`` stops after the slide outputs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, _ = demo_slides(out, log)
    if not full:
        return written
    log("Virtual staining with the shipped demonstration pair (not for diagnosis):")
    more, images = demo_virtual_stains(out, log)
    written += more
    log("Ki-67 ratio (built-in nuclei segmentation, whole image):")
    written += demo_ratio(out, images, log)
    log("QA:")
    written += demo_qa(out, images, log)
    return written
