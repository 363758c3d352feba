"""The Ki-67 ratio of ROIs end to end: read, segment in blocks, measure, classify, summarise.

``iter_measure_rois`` is the one entry point the widget and the CLI call; it is a generator that
yields ``Progress`` and returns a ``RatioRun`` (stop iterating to cancel). The virtual-vs-real
comparison and seed 003's route (nuclei from a virtual H&E, DAB from the original IHC) are built
on it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace

import numpy as np

from ..deconvolution import (
    QUPATH_HE,
    TISSUE_OD_MIN,
    StainVectors,
    estimate_background,
    optical_density,
    resolve_stains,
)
from ..geometry import Box, level_for_size
from ..progress import blocking
from ..roi import ROI, validate_rois
from ..segmentation import (
    DEFAULT_SEGMENTER,
    Progress,
    get_segmenter,
    iter_segment_in_blocks,
)
from ..segmentation.blocks import DEFAULT_BLOCK_PX, default_overlap_px
from .coverage import check_computed, opaque_pixels
from .measure import Ki67Config, Nuclei, measure_nuclei, summarise
from .run import MAX_LABEL_PIXELS, RatioRun, RoiMeasurement
from .stain_check import UNVERIFIED, StainCheckError, check_hdab

# Side of the subsampled view used for the glass level and stain estimation.
OVERVIEW_SIDE_PX = 2048
# A whole-image overview is read only from a stored level at most this large per side...
CHEAP_VIEW_SIDE_PX = 8192
# ...else from the ROIs' boxes grown by this much (level-0 px) on each side.
ESTIMATE_CONTEXT_PX = 2048
# Below this fraction of tissue pixels an ROI "has no tissue".
MIN_TISSUE_FRACTION = 0.01


def level0(image):
    """The full-resolution (y, x, 3) array of a ``Slide`` or an array-like."""
    levels = getattr(image, "levels", None)
    arr = levels[0] if levels is not None else image
    if len(arr.shape) != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected a (y, x, 3) RGB image, found shape {tuple(arr.shape)}")
    return arr


def overview(image, side_px: int = OVERVIEW_SIDE_PX) -> np.ndarray:
    """A small view of the whole image for glass and stain estimates."""
    return _small_view(image, Box.from_shape(level0(image).shape), side_px)[0]


def _small_view(image, box: Box, side_px: int) -> tuple[np.ndarray, float]:
    """The level-0 ``box`` at most ``side_px`` per side, and its downsample.

    A slide's pyramid level is used where one is coarse enough: striding level 0 of a dask
    array would still read every chunk of it.
    """
    y0, x0, y1, x1 = box.corners
    levels = getattr(image, "levels", None) or [level0(image)]
    downs = [levels[0].shape[0] / arr.shape[0] for arr in levels]
    side0 = max(y1 - y0, x1 - x0)
    # the coarsest level where the box keeps side_px pixels (or all it has at level 0)
    level = level_for_size([side0 / d for d in downs], min_px=min(side_px, side0))
    arr, down = levels[level], downs[level]
    ly0, lx0 = int(y0 / down), int(x0 / down)
    ly1, lx1 = max(ly0 + 1, int(np.ceil(y1 / down))), max(lx0 + 1, int(np.ceil(x1 / down)))
    step = max(1, int(np.ceil(max(ly1 - ly0, lx1 - lx0) / side_px)))
    return np.asarray(arr[ly0:ly1:step, lx0:lx1:step, :3]), down * step


def estimation_view(image, rois: list[ROI], mpp: float) -> np.ndarray:
    """The view that glass and stains are estimated on, at a cost bounded by the ROIs.

    The whole image where that is cheap (an array in memory, or a stored pyramid level of at
    most ``CHEAP_VIEW_SIDE_PX`` per side). On a flat (single-level) slide a whole-image view
    would read every tile, so the ROIs' neighbourhood is used instead: their boxes grown by
    ``ESTIMATE_CONTEXT_PX`` (enough glass around a biopsy for the background).
    """
    levels = getattr(image, "levels", None)
    stored = list(levels)[: len(levels) - getattr(image, "built_levels", 0)] if levels else None
    if not stored or max(stored[-1].shape[:2]) <= CHEAP_VIEW_SIDE_PX:
        return overview(image)
    shape = level0(image).shape[:2]
    boxes = [roi.bbox_px(mpp, shape).grown(ESTIMATE_CONTEXT_PX, shape) for roi in rois]
    y0, x0 = min(b.y for b in boxes), min(b.x for b in boxes)
    y1, x1 = max(b.y1 for b in boxes), max(b.x1 for b in boxes)
    if (y1 - y0) * (x1 - x0) > 4 * sum(b.h * b.w for b in boxes):
        box = max(boxes, key=lambda b: b.h * b.w)  # far-apart ROIs: not the space between
    else:
        box = Box.from_corners(y0, x0, y1, x1)
    return _small_view(image, box, OVERVIEW_SIDE_PX)[0]


def make_segmenter(name: str, stains: StainVectors, background_rgb, he: bool = False, **options):
    """A segmenter by name; the built-in one gets the image's stains and glass level.

    On IHC the built-in detection uses hematoxylin + DAB, because the brown of a strongly
    positive nucleus hides its hematoxylin; on H&E (``he``) it uses hematoxylin.
    """
    if name == "builtin":
        options.setdefault("stains", QUPATH_HE if he else stains)
        options.setdefault("background_rgb", tuple(float(v) for v in background_rgb))
        options.setdefault("detection_image", "hematoxylin" if he else "hematoxylin+dab")
    return get_segmenter(name, **options)


def iter_measure_rois(
    image,
    mpp: float,
    rois: list[ROI] | None = None,
    *,
    segmenter=DEFAULT_SEGMENTER,
    stains: str | StainVectors = "qupath",
    config: Ki67Config | None = None,
    background_rgb=None,
    block_px: int = DEFAULT_BLOCK_PX,
    overlap_px: int | None = None,
    measure_image=None,
    segment_he: bool = False,
    force: bool = False,
) -> Generator[Progress, None, RatioRun]:
    """Measure the Ki-67 ratio in each ROI of ``image`` (whole image when ``rois`` is None).

    Parameters
    ----------
    image : Slide or array-like (y, x, 3) uint8
        What is segmented; only the ROIs' boxes are read.
    mpp : float
        Level-0 µm per pixel.
    segmenter : str or Segmenter
        "learned" (the default), "builtin", "stardist", "cellpose" or a ready segmenter.
    stains : str or StainVectors
        "qupath", "skimage", "estimate" (Macenko on the image) or vectors, for the DAB.
    measure_image : Slide or array-like, optional
        Where the DAB is measured (same pixel grid as ``image``); seed 003's route segments a
        virtual H&E and measures the original IHC.
    segment_he : bool
        ``image`` is H&E (the built-in detection then uses H&E vectors).
    force : bool
        Measure even when the measured image does not look like H-DAB (see ``check_hdab``);
        every result then carries the warning "stain not verified". Without it such an image
        raises ``StainCheckError`` before anything is segmented.
    """
    config = config or Ki67Config()
    seg_arr = level0(image)
    dab_arr = seg_arr if measure_image is None else level0(measure_image)
    if tuple(dab_arr.shape[:2]) != tuple(seg_arr.shape[:2]):
        raise ValueError(
            f"the measured image {tuple(dab_arr.shape[:2])} and the segmented image "
            f"{tuple(seg_arr.shape[:2])} must have the same size"
        )
    shape = tuple(int(s) for s in seg_arr.shape[:2])
    rois = validate_rois(rois or [ROI.whole_image(shape, mpp)], shape, mpp)
    for roi in rois:  # before anything else: refuse a half-computed virtual stain at once
        for arr in {id(seg_arr): seg_arr, id(dab_arr): dab_arr}.values():
            check_computed(arr, roi, mpp)
    yield Progress(0, len(rois), "estimating background and stains")
    dab_image = image if measure_image is None else measure_image
    small = opaque_pixels(estimation_view(dab_image, rois, mpp), dab_arr)
    bg = estimate_background(small) if background_rgb is None else np.asarray(background_rgb, float)
    check = check_hdab(_roi_pixels(dab_image, rois, mpp), bg)
    if not check.ok:
        if not force:
            raise StainCheckError(check)
        check = check.as_forced()
    vectors = resolve_stains(stains, small)
    seg_bg = (
        bg
        if measure_image is None
        else estimate_background(opaque_pixels(estimation_view(image, rois, mpp), seg_arr))
    )
    if isinstance(segmenter, str):
        segmenter = make_segmenter(segmenter, vectors, seg_bg, he=segment_he)
    overlap = default_overlap_px(segmenter, mpp) if overlap_px is None else overlap_px
    out, next_label = [], 1
    for i, roi in enumerate(rois):
        yield Progress(i, len(rois), f"ROI {roi.name!r}")
        m = yield from _measure_one(
            roi,
            seg_arr,
            dab_image,
            mpp,
            segmenter,
            vectors,
            bg,
            config,
            block_px,
            overlap,
            next_label,
        )
        next_label += len(m.nuclei)
        out.append(m if check.verified else m.unverified(f"{UNVERIFIED}: {check.reason}"))
    yield Progress(len(rois), len(rois), "done")
    prov = _provenance(segmenter, vectors, bg, config, mpp, block_px, overlap, measure_image)
    prov["stain_check"] = check.to_dict()
    return RatioRun(tuple(out), mpp, vectors, tuple(float(v) for v in bg), prov, check)


#: Blocking form of :func:`iter_measure_rois` (``progress=`` gets each report).
measure_rois = blocking(iter_measure_rois)


def _measure_one(
    roi, seg_arr, dab_image, mpp, segmenter, vectors, bg, config, block_px, overlap, first
):
    shape = seg_arr.shape[:2]
    dab_arr = level0(dab_image)
    box = roi.bbox_px(mpp, shape)
    y0, x0, y1, x1 = box.corners
    # Grow the box so nuclei whose centre is inside the ROI are not cut by the box edge.
    ey0, ex0, ey1, ex1 = box.grown(overlap, shape).corners
    keep_labels = (ey1 - ey0) * (ex1 - ex0) <= MAX_LABEL_PIXELS
    parts: list[Nuclei] = []

    def measure_block(labels, block_rgb, origin):
        # Nuclei are measured block by block, so a whole-slide ROI never sits in memory at once.
        oy, ox = ey0 + origin[0], ex0 + origin[1]
        h, w = labels.shape
        dab = block_rgb if dab_arr is seg_arr else np.asarray(dab_arr[oy : oy + h, ox : ox + w, :3])
        nuclei = measure_nuclei(labels, dab, mpp, vectors, bg, config, origin_px=(oy, ox))
        mask = roi.mask(mpp, (oy, ox), (h, w))
        cy = np.clip(np.round(nuclei.y - oy).astype(int), 0, h - 1)
        cx = np.clip(np.round(nuclei.x - ox).astype(int), 0, w - 1)
        parts.append(nuclei.select(mask[cy, cx]))

    crop = seg_arr[ey0:ey1, ex0:ex1, :3]  # lazy for dask / zarr: read block by block
    labels = yield from iter_segment_in_blocks(
        segmenter, crop, mpp, block_px, overlap, on_block=measure_block, keep_labels=keep_labels
    )
    nuclei = Nuclei.concat(parts)
    # Fresh ids, unique across ROIs, so that all ROIs fit in one label image.
    new_ids = np.arange(first, first + len(nuclei), dtype=np.uint32)
    roi_labels = None
    if labels is not None:
        lut = np.zeros(int(labels.max()) + 1, np.uint32)
        lut[nuclei.label] = new_ids
        roi_labels = lut[labels[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]]
    nuclei = replace(nuclei, label=new_ids)
    area = roi.area_um2 if labels is None else _clipped_area(roi, mpp, (y0, x0), (y1, x1))
    no_tissue = _tissue_fraction(roi, dab_image, mpp, bg) < MIN_TISSUE_FRACTION
    result = summarise(nuclei, roi.name, config, area, no_tissue=bool(no_tissue))
    return RoiMeasurement(roi, result, nuclei, roi_labels, (y0, x0), config)


def _clipped_area(roi: ROI, mpp: float, top_left, bottom_right) -> float:
    """ROI area inside the image, in µm² (a partly outside ROI is clipped)."""
    shape = (bottom_right[0] - top_left[0], bottom_right[1] - top_left[1])
    return float(roi.mask(mpp, top_left, shape).sum()) * mpp * mpp


def _roi_pixels(image, rois: list[ROI], mpp: float, side_px: int = 1024) -> np.ndarray:
    """The pixels inside the ROIs (each read at <= ``side_px`` per side) as (N, 1, 3).

    The stain check looks at what is measured: a pen mark or a label outside the ROIs does
    not refuse them.
    """
    parts = []
    for roi in rois:
        box = roi.bbox_px(mpp, level0(image).shape[:2])
        view, down = _small_view(image, box, side_px)
        mask = roi.mask(mpp * down, (box.y / down, box.x / down), view.shape[:2])
        parts.append(view[mask])
    pixels = np.concatenate(parts)
    return opaque_pixels(pixels[:, None, :], level0(image))


def _tissue_fraction(roi: ROI, image, mpp: float, bg) -> float:
    """Fraction of the ROI's pixels with tissue (OD sum > 0.15), on a view of <= 1024² px."""
    box = roi.bbox_px(mpp, level0(image).shape[:2])
    view, down = _small_view(image, box, 1024)
    mask = roi.mask(mpp * down, (box.y / down, box.x / down), view.shape[:2])
    if not mask.any():
        return 0.0
    return float((optical_density(view, bg).sum(axis=-1)[mask] > TISSUE_OD_MIN).mean())


def _provenance(segmenter, vectors, bg, config, mpp, block_px, overlap, measure_image) -> dict:
    from ..engine.provenance import package_versions

    seg_config = getattr(segmenter, "config", None)
    return {
        "segmenter": getattr(segmenter, "name", type(segmenter).__name__),
        "segmenter_config": repr(seg_config) if seg_config is not None else None,
        "stains": vectors.to_dict(),
        "background_rgb": [round(float(v), 2) for v in bg],
        "thresholds_dab_od": list(config.thresholds),
        "hscore_thresholds_dab_od": list(config.hscore_thresholds),
        "mpp": mpp,
        "block_px": block_px,
        "overlap_px": overlap,
        "dab_measured_on_other_image": measure_image is not None,
        "versions": package_versions(),
    }


@dataclass(frozen=True)
class VirtualVsReal:
    """The same ROIs measured on the real stain and on the virtual one."""

    real: RatioRun
    virtual: RatioRun

    def comparison(self) -> list[dict]:
        """Per ROI: both labelling indices and area ratios and their differences."""
        rows = []
        for r, v in zip(self.real.results, self.virtual.results, strict=True):
            rows.append(
                {
                    "name": r.name,
                    "labelling_index_real": r.labelling_index,
                    "labelling_index_virtual": v.labelling_index,
                    "delta_labelling_index": v.labelling_index - r.labelling_index,
                    "area_ratio_real": r.area_ratio,
                    "area_ratio_virtual": v.area_ratio,
                    "delta_area_ratio": v.area_ratio - r.area_ratio,
                }
            )
        return rows


def ratio_virtual_vs_real(
    real_ki67,
    mpp: float,
    rois: list[ROI] | None = None,
    *,
    virtual_ki67=None,
    he_rgb=None,
    model=None,
    virtual_mpp: float | None = None,
    **kwargs,
) -> VirtualVsReal:
    """Measure ROIs (in µm, each slide's own coordinates) on real and virtual Ki-67.

    The virtual Ki-67 is ``virtual_ki67``, or is made from ``he_rgb`` with ``model`` (a loaded
    H&E -> Ki-67 generator) through the staining engine.
    """
    if virtual_ki67 is None:
        if he_rgb is None or model is None:
            raise ValueError("give virtual_ki67, or he_rgb and a model to make it")
        from ..engine import stain_image

        virtual_ki67 = stain_image(model, np.asarray(he_rgb), mpp=virtual_mpp or mpp)
    real = measure_rois(real_ki67, mpp, rois, **kwargs)
    virtual = measure_rois(virtual_ki67, virtual_mpp or mpp, rois, **kwargs)
    return VirtualVsReal(real, virtual)


def ratio_from_virtual_he(
    ihc_rgb,
    mpp: float,
    rois: list[ROI] | None = None,
    *,
    virtual_he=None,
    model=None,
    segmenter=DEFAULT_SEGMENTER,
    **kwargs,
) -> RatioRun:
    """Seed 003's route: segment nuclei on a virtual H&E, classify them by the original DAB.

    ``virtual_he`` is made from ``ihc_rgb`` with ``model`` (a Ki-67 -> H&E generator) when not
    given. The translation keeps nuclei in place, so the labels index the IHC's pixels directly.
    """
    if virtual_he is None:
        if model is None:
            raise ValueError("give virtual_he, or a Ki-67 -> H&E model to make it")
        from ..engine import stain_image

        virtual_he = stain_image(model, np.asarray(ihc_rgb), mpp=mpp)
    return measure_rois(
        virtual_he, mpp, rois, segmenter=segmenter, measure_image=ihc_rgb, segment_he=True, **kwargs
    )
