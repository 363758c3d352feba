"""``virtualstain segment``: nuclei of an image as labels, a CSV table and QuPath detections.

    virtualstain segment IMAGE [--segmenter builtin|stardist|cellpose] [--model-dir DIR]
        [--mpp 0.25] [--tile-px 4096] [--labels-out LABELS.tif] [--csv NUCLEI.csv]
        [--geojson-out NUCLEI.geojson] [--quiet]

The image is segmented block by block (``--tile-px``), every nucleus whole and counted once.
The CSV and GeoJSON are built block by block too; only ``--labels-out`` holds the whole label
image in memory, so it is refused for images above ``MAX_LABEL_PX`` pixels.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from ._params import MPP, OUTPUT_FILE, UsageFailure, build_segmenter, segmenter_options
from .progress import tqdm_progress

MAX_LABEL_PX = 2**31  # 8 GiB of uint32
CSV_COLUMNS = ("label", "y_px", "x_px", "area_px", "area_um2")


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@segmenter_options
@click.option(
    "--mpp", type=MPP, help="Input pixel size (µm/px); overrides (or supplies) the file's."
)
@click.option(
    "--tile-px", type=click.IntRange(256), default=4096, show_default=True, help="Block size."
)
@click.option("--labels-out", type=OUTPUT_FILE, help="uint32 nuclei labels (TIFF).")
@click.option(
    "--csv", "csv_out", type=OUTPUT_FILE, help="One row per nucleus: " + ", ".join(CSV_COLUMNS)
)
@click.option("--geojson-out", type=OUTPUT_FILE, help="Nuclei as QuPath detections.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def segment(
    image, segmenter, model_dir, mpp, tile_px, labels_out, csv_out, geojson_out, quiet
) -> None:
    """Segment the nuclei of IMAGE (level 0) and write the outputs asked for."""
    from napari_virtualstain.core.io import open_slide

    outputs = [p for p in (labels_out, csv_out, geojson_out) if p is not None]
    if not outputs:
        raise click.UsageError("give at least one output: --labels-out, --csv or --geojson-out")
    for out in outputs:
        if Path(out).resolve() == Path(image).resolve():
            raise click.ClickException(f"refusing to overwrite the input {out}")
    slide = open_slide(image)
    mpp = mpp if mpp is not None else slide.mpp
    if mpp is None:
        raise UsageFailure(f"{image}: the pixel size is unknown; pass --mpp (µm/px)")
    h, w = slide.shape
    if labels_out and h * w > MAX_LABEL_PX:
        raise click.ClickException(
            f"{image}: {h} x {w} px is too large for one label image; use --csv / --geojson-out"
        )
    seg = build_segmenter(segmenter, model_dir)
    start = time.perf_counter()
    labels, rows, features = _run(seg, slide.levels[0], mpp, tile_px, bool(labels_out),
                                  bool(geojson_out), quiet)  # fmt: skip
    seconds = time.perf_counter() - start
    provenance = {"image": str(image), "mpp": mpp, "segmenter": seg.name, "tile_px": tile_px}
    if labels_out:
        _write_labels(labels_out, labels, mpp, provenance)
    if csv_out:
        _write_csv(csv_out, rows)
    if geojson_out:
        from napari_virtualstain.core.geojson import write_geojson

        write_geojson(geojson_out, features)
    click.echo(f"{image}: {len(rows)} nuclei ({seg.name}, {mpp:g} µm/px) in {seconds:.1f} s")


def _run(seg, rgb, mpp, tile_px, keep_labels, outlines, quiet):
    import numpy as np

    from napari_virtualstain.core.geojson import label_features
    from napari_virtualstain.core.progress import drain
    from napari_virtualstain.core.segmentation import iter_segment_in_blocks

    rows, features = [], []

    def on_block(labels, _block, origin_px):
        ids = np.unique(labels)
        ids = ids[ids > 0]
        if ids.size == 0:
            return
        from scipy import ndimage as ndi

        centres = ndi.center_of_mass(labels > 0, labels, ids)
        areas = ndi.sum_labels(np.ones(labels.shape), labels, ids)
        for i, (cy, cx), area in zip(ids.tolist(), centres, areas.tolist(), strict=True):
            y, x = cy + origin_px[0], cx + origin_px[1]
            rows.append((i, round(y, 2), round(x, 2), int(area), round(area * mpp**2, 3)))
        if outlines:
            features.extend(label_features(labels, origin_px, mpp))

    with tqdm_progress("segment", quiet, unit="block") as on_progress:
        gen = iter_segment_in_blocks(
            seg, rgb, mpp, block_px=tile_px, on_block=on_block, keep_labels=keep_labels
        )
        labels = drain(gen, on_progress)
    rows.sort()
    return labels, rows, features


def _write_labels(path: Path, labels, mpp: float, provenance: dict) -> None:
    import json

    import tifffile

    from napari_virtualstain.core.io.atomic import atomic_path

    res = 1e4 / mpp  # pixels per cm
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, labels, compression="zlib", tile=(512, 512) if min(labels.shape) >= 512 else None,
            resolution=(res, res), resolutionunit="CENTIMETER",
            description=json.dumps({"mpp": mpp, **provenance}), metadata=None,
        )  # fmt: skip


def _write_csv(path: Path, rows) -> None:
    import csv

    from napari_virtualstain.core.io.atomic import atomic_open

    with atomic_open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
