"""``virtualstain ratio``: the Ki-67 tumour ratio of ROIs on a slide or tile.

The contract (other tools rely on it)::

    virtualstain ratio IMAGE [--roi ROI.geojson] [--mpp 0.25]
        [--segmenter builtin|stardist|cellpose] [--model-dir DIR] [--threshold 0.2]
        [--stains qupath|skimage|estimate] [--json OUT.json] [--labels-out LABELS.tif]
        [--nuclei-csv NUCLEI.csv] [--geojson-out OUT.geojson]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ._params import MPP, OUTPUT_FILE

JSON_KEYS = (
    "name",
    "n_nuclei",
    "n_positive",
    "labelling_index",
    "area_ratio",
    "h_score",
    "bin",
    "who_grade",
    "nuclei_area_um2",
    "positive_area_um2",
)


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--roi", "roi_path", type=click.Path(path_type=Path), help="ROIs (QuPath GeoJSON).")
@click.option("--mpp", type=MPP, help="µm per pixel; overrides (or supplies) the file's.")
@click.option(
    "--segmenter",
    type=click.Choice(["builtin", "stardist", "cellpose"]),
    default="builtin",
    show_default=True,
)
@click.option("--model-dir", type=click.Path(path_type=Path), help="Local StarDist/Cellpose model.")
@click.option(
    "--threshold",
    "thresholds",
    type=float,
    multiple=True,
    help="DAB OD threshold (default 0.2); give it three times for 1+/2+/3+.",
)
@click.option(
    "--stains",
    type=click.Choice(["qupath", "skimage", "estimate"]),
    default="qupath",
    show_default=True,
)
@click.option("--json", "json_out", type=OUTPUT_FILE, help="Per-ROI results.")
@click.option("--labels-out", type=OUTPUT_FILE, help="uint32 nuclei labels (TIFF).")
@click.option("--nuclei-csv", type=OUTPUT_FILE, help="Per-nucleus CSV.")
@click.option("--geojson-out", type=OUTPUT_FILE, help="ROIs + nuclei for QuPath.")
def ratio(
    image, roi_path, mpp, segmenter, model_dir, thresholds, stains, json_out, labels_out,
    nuclei_csv, geojson_out,
) -> None:  # fmt: skip
    """Measure the Ki-67 labelling index and area ratio of IMAGE (whole image or --roi ROIs)."""
    from napari_virtualstain.core.io import SlideReadError, open_slide
    from napari_virtualstain.core.ki67 import Ki67Config

    outputs = [p for p in (json_out, labels_out, nuclei_csv, geojson_out) if p is not None]
    _refuse_overwriting_input(image, roi_path, outputs)
    try:
        slide = open_slide(image)
    except SlideReadError as err:
        raise click.ClickException(str(err)) from err
    mpp = mpp if mpp is not None else slide.mpp
    if mpp is None or mpp <= 0:
        raise click.ClickException(f"{image}: the pixel size is unknown; pass --mpp (µm/px)")
    _refuse_greyscale(slide, image)
    try:
        config = Ki67Config(thresholds=tuple(thresholds) or (0.2,))
        rois = _read_rois(roi_path, mpp)
        _check_rois_inside(rois, slide.shape, mpp, roi_path)
        run = _run(slide, mpp, rois, segmenter, model_dir, stains, config)
    except (ValueError, ImportError) as err:
        raise click.ClickException(str(err)) from err
    _echo(run)
    provenance = {**run.provenance, "image": str(image), "roi_file": _str(roi_path)}
    if json_out:
        _write_json(json_out, run, provenance)
    if nuclei_csv:
        _write_nuclei_csv(nuclei_csv, run)
    try:
        if labels_out:
            _write_labels(labels_out, run, provenance)
        if geojson_out:
            _write_geojson(geojson_out, run)
    except ValueError as err:  # ROIs too large for a label image
        raise click.ClickException(str(err)) from err


def _str(p):
    return None if p is None else str(p)


def _refuse_overwriting_input(image: Path, roi_path, outputs: list[Path]) -> None:
    inputs = {Path(p).resolve() for p in (image, roi_path) if p is not None}
    for out in outputs:
        if Path(out).resolve() in inputs:
            raise click.ClickException(f"refusing to overwrite the input {out}")


def _refuse_greyscale(slide, image) -> None:
    from napari_virtualstain.core.io.pixels import is_colourless

    if "greyscale" in slide.notes or is_colourless(slide.levels[0]):
        raise click.ClickException(
            f"{image}: the image has no colour (greyscale); the Ki-67 index needs a brightfield "
            "RGB image where DAB brown and haematoxylin blue can be told apart"
        )


def _check_rois_inside(rois, shape_px, mpp: float, roi_path) -> None:
    """Refuse ROIs with non-finite or absurd coordinates, or lying outside the image."""
    import numpy as np

    h_um, w_um = shape_px[0] * mpp, shape_px[1] * mpp
    margin_um = max(0.1 * max(h_um, w_um), 1000 * mpp)
    for roi in rois or ():
        pts = np.asarray(roi.polygon_um(), dtype=float)
        if not np.isfinite(pts).all():
            raise ValueError(f"{roi_path}: ROI {roi.name!r} has non-finite coordinates")
        (y0, x0), (y1, x1) = pts.min(axis=0), pts.max(axis=0)
        if y0 < -margin_um or x0 < -margin_um or y1 > h_um + margin_um or x1 > w_um + margin_um:
            raise ValueError(
                f"{roi_path}: ROI {roi.name!r} spans y {y0:.4g}..{y1:.4g}, x {x0:.4g}..{x1:.4g} "
                f"µm, far outside the image ({h_um:.6g} x {w_um:.6g} µm); wrong file or --mpp?"
            )
        if y1 <= 0 or x1 <= 0 or y0 >= h_um or x0 >= w_um:
            raise ValueError(f"{roi_path}: ROI {roi.name!r} lies outside the image")


def _read_rois(roi_path, mpp):
    if roi_path is None:
        return None
    from napari_virtualstain.core.geojson import read_geojson

    rois = read_geojson(roi_path, mpp).rois
    if not rois:
        raise ValueError(f"{roi_path}: no annotation polygons to use as ROIs")
    return rois


def _run(slide, mpp, rois, segmenter, model_dir, stains, config):
    from napari_virtualstain.core.ki67.pipeline import iter_measure_rois
    from napari_virtualstain.core.segmentation import drain

    seg = segmenter
    if segmenter != "builtin":
        # The weight-based backends take their model folder / file as ``model``.
        from napari_virtualstain.core.segmentation import get_segmenter

        seg = get_segmenter(segmenter, **({"model": str(model_dir)} if model_dir else {}))

    def report(step):
        if step.message:
            click.echo(f"[{step.done}/{step.total}] {step.message}", err=True)

    gen = iter_measure_rois(slide, mpp, rois, segmenter=seg, stains=stains, config=config)
    return drain(gen, report)


def _echo(run) -> None:
    click.echo(f"stains: {json.dumps(run.stains.to_dict())}")
    for r in run.results:
        grade = r.who_grade or "n/a"
        click.echo(
            f"{r.name}: {r.n_positive}/{r.n_nuclei} positive, labelling index "
            f"{r.labelling_index:.3f}, area ratio {r.area_ratio:.3f} (bin {r.bin}), "
            f"H-score {r.h_score:.1f}, WHO {grade}"
        )
        for w in r.warnings:
            click.echo(f"warning: {w}", err=True)


def _write_json(path: Path, run, provenance: dict) -> None:
    rois = []
    for m in run.measurements:
        d = m.result.to_dict()
        rois.append(
            {**{k: d[k] for k in JSON_KEYS}, **{k: v for k, v in d.items() if k not in JSON_KEYS}}
        )
    payload = {"rois": rois, "provenance": provenance}
    from napari_virtualstain.core.io.atomic import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, payload)  # a failed write leaves the previous file intact


def _write_labels(path: Path, run, provenance: dict) -> None:
    import tifffile

    labels, (y0, x0) = run.labels_union()
    meta = {"origin_yx_px": [int(y0), int(x0)], "mpp": run.mpp, "provenance": provenance}
    from napari_virtualstain.core.io.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, labels.astype("uint32"), compression="zlib", description=json.dumps(meta)
        )


def _write_nuclei_csv(path: Path, run) -> None:
    from napari_virtualstain.core.io.atomic import atomic_path
    from napari_virtualstain.core.ki67 import write_nuclei_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        write_nuclei_csv(tmp, [(m.roi.name, m.nuclei) for m in run.measurements])


def _write_geojson(path: Path, run) -> None:
    from napari_virtualstain.core.geojson import nuclei_features, roi_features, write_geojson

    rois = [m.roi for m in run.measurements]
    feats = roi_features(rois, run.mpp, run.results)
    for m in run.measurements:
        if m.labels is None:
            raise ValueError(
                f"ROI {m.roi.name!r} is too large to outline its nuclei; use smaller ROIs"
            )
        feats += nuclei_features(m.labels, m.nuclei, m.origin_px, m.config.class_names)
    write_geojson(path, feats)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(ratio())
