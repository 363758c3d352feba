"""``virtualstain ratio``: the Ki-67 tumour ratio of ROIs on a slide or tile.

The contract (other tools rely on it)::

    virtualstain ratio IMAGE [--roi ROI.geojson] [--mpp 0.25]
        [--segmenter builtin|stardist|cellpose|...] [--model-dir DIR] [--threshold 0.2]
        [--stains qupath|skimage|estimate] [--json OUT.json] [--labels-out LABELS.tif]
        [--nuclei-csv NUCLEI.csv] [--geojson-out OUT.geojson] [--force] [--quiet]

IMAGE must look like hematoxylin + DAB (``core.ki67.stain_check``); H&E, greyscale or foreign
stains are refused with the reason, unless ``--force``, which marks every result "stain not
verified" and gives no bin or grade. Files are written through ``core.ki67.export``.

ROI holes (QuPath's interior rings) are left out of each ROI's nuclei and area; what the ROI
file held that could not be used as drawn (points, lines, a multi-part annotation measured part
by part) is printed as a warning and listed under ``roi_notes`` in the JSON.

An IMAGE whose provenance says it is a virtual stain (an OME-Zarr written by ``stain``) is
announced as "virtual stain (model X)" first, in every result and under ``virtual_stain`` in the
JSON; when the model's card says it is not for diagnosis, or is not found, no bin or WHO grade
is given (``core.ki67.virtual_input``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from napari_virtualstain.core.ki67.export import JSON_KEYS  # noqa: F401 - the contract's keys

from ._params import (
    MPP,
    OUTPUT_FILE,
    UsageFailure,
    build_segmenter,
    check_thresholds,
    segmenter_options,
)


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--roi", "roi_path", type=click.Path(path_type=Path), help="ROIs (QuPath GeoJSON).")
@click.option("--mpp", type=MPP, help="µm per pixel; overrides (or supplies) the file's.")
@segmenter_options
@click.option(
    "--threshold",
    "thresholds",
    type=float,
    multiple=True,
    callback=check_thresholds,
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
@click.option(
    "--force",
    is_flag=True,
    help="Measure even if IMAGE does not look like H-DAB (results: 'stain not verified').",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ratio(
    image, roi_path, mpp, segmenter, model_dir, thresholds, stains, json_out, labels_out,
    nuclei_csv, geojson_out, force, quiet,
) -> None:  # fmt: skip
    """Measure the Ki-67 labelling index and area ratio of IMAGE (whole image or --roi ROIs)."""
    from napari_virtualstain.core.io import SlideReadError, open_slide
    from napari_virtualstain.core.ki67 import Ki67Config, StainCheckError

    outputs = [p for p in (json_out, labels_out, nuclei_csv, geojson_out) if p is not None]
    _refuse_overwriting_input(image, roi_path, outputs)
    try:
        slide = open_slide(image)
    except SlideReadError as err:
        raise click.ClickException(str(err)) from err
    mpp = mpp if mpp is not None else slide.mpp
    if mpp is None or mpp <= 0:
        raise UsageFailure(f"{image}: the pixel size is unknown; pass --mpp (µm/px)")
    _refuse_greyscale(slide, image)  # even with --force: no colour, no DAB to measure
    virtual = _virtual_input(image)
    try:
        config = Ki67Config(thresholds=tuple(thresholds) or (0.2,))
        rois, roi_notes = _read_rois(roi_path, mpp)
        _check_rois_inside(rois, slide.shape, mpp, roi_path)
        run = _run(slide, mpp, rois, segmenter, model_dir, stains, config, force, quiet)
    except StainCheckError as err:
        raise click.ClickException(f"{image}: {err}") from err
    except (ValueError, ImportError) as err:
        raise click.ClickException(str(err)) from err
    if virtual is not None:
        from napari_virtualstain.core.ki67.virtual_input import mark_virtual

        run = mark_virtual(run, virtual)
    _echo(run, virtual, [f"{roi_path}: {n}" for n in roi_notes])
    extra = {"roi_notes": roi_notes} if roi_notes else {}
    if virtual is not None:
        extra["virtual_stain"] = virtual.to_dict()
    _write_outputs(run, image, roi_path, json_out, nuclei_csv, labels_out, geojson_out, extra)


def _virtual_input(image):
    """What IMAGE's provenance says about it being a virtual stain (None: a real stain)."""
    from napari_virtualstain.core.ki67.virtual_input import read_provenance, virtual_input

    return virtual_input(read_provenance(image)) if Path(image).is_dir() else None


def _write_outputs(
    run, image, roi_path, json_out, nuclei_csv, labels_out, geojson_out, extra
) -> None:
    from napari_virtualstain.core.io.atomic import write_json_atomic
    from napari_virtualstain.core.ki67 import export

    provenance = {**run.provenance, **extra, "image": str(image), "roi_file": _str(roi_path)}
    if json_out:
        # What the reader must see first (a virtual stain, ROI notes) also heads the file.
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_out, {**extra, **export.run_json(run, provenance)})
    if nuclei_csv:
        Path(nuclei_csv).parent.mkdir(parents=True, exist_ok=True)
        export.write_nuclei_csv(nuclei_csv, [(m.roi.name, m.nuclei) for m in run.measurements])
    if geojson_out:
        skipped = export.write_run_geojson(geojson_out, run)
        if skipped:
            click.echo(
                f"warning: {geojson_out}: nuclei of ROIs {skipped} left out (too large to "
                "outline); their results are in the file",
                err=True,
            )
    if labels_out:
        try:
            export.write_run_labels(labels_out, run, provenance)
        except ValueError as err:  # ROIs too large for a label image
            raise click.ClickException(f"{labels_out}: {err}") from err


def _str(p):
    return None if p is None else str(p)


def _refuse_overwriting_input(image: Path, roi_path, outputs: list[Path]) -> None:
    inputs = {Path(p).resolve() for p in (image, roi_path) if p is not None}
    for out in outputs:
        if Path(out).resolve() in inputs:
            raise click.ClickException(f"refusing to overwrite the input {out}")


def _refuse_greyscale(slide, image) -> None:
    from napari_virtualstain.core.io.pixels import is_colourless

    if "greyscale" in slide.notes or is_colourless(slide):
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
    """The ROIs of ``roi_path`` (None: the whole image) and the reader's notes on them."""
    if roi_path is None:
        return None, []
    from napari_virtualstain.core.geojson import read_geojson

    objs = read_geojson(roi_path, mpp)
    if not objs.rois:
        raise ValueError(f"{roi_path}: no annotation polygons to use as ROIs")
    return objs.rois, list(objs.notes)


def _run(slide, mpp, rois, segmenter, model_dir, stains, config, force, quiet):
    from napari_virtualstain.core.ki67.pipeline import iter_measure_rois
    from napari_virtualstain.core.segmentation import drain

    # By name, the built-in watershed gets the image's stains and glass level from the pipeline.
    seg = segmenter if segmenter == "builtin" else build_segmenter(segmenter, model_dir)

    from .progress import tqdm_progress

    gen = iter_measure_rois(
        slide, mpp, rois, segmenter=seg, stains=stains, config=config, force=force
    )
    with tqdm_progress("ratio", quiet, unit="ROI") as on_progress:
        return drain(gen, on_progress)


def _echo(run, virtual, notes: list[str]) -> None:
    if virtual is not None:
        verdict = "" if virtual.for_diagnosis else f"; no bin or WHO grade: {virtual.reason}"
        direction = virtual.direction or "direction unknown"
        click.echo(f"VIRTUAL STAIN (model {virtual.model}, {direction}){verdict}")
    for note in notes:
        click.echo(f"warning: {note}", err=True)
    click.echo(f"stains: {json.dumps(run.stains.to_dict())}")
    if not run.stain_verified:
        click.echo(f"warning: stain not verified: {run.stain_check.reason}", err=True)
    for r in run.results:
        graded = f"(bin {r.bin}), H-score {r.h_score:.1f}, WHO {r.who_grade}"
        if not r.graded:
            graded = f"H-score {r.h_score:.1f}, no bin or grade: {r.no_grade_reason}"
        click.echo(
            f"{r.name}: {r.n_positive}/{r.n_nuclei} positive, labelling index "
            f"{r.labelling_index:.3f}, area ratio {r.area_ratio:.3f} {graded}"
            + (f"; {r.n_faint} too faint to classify" if r.n_faint else "")
        )
        for w in r.warnings:
            click.echo(f"warning: {w}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(ratio())
