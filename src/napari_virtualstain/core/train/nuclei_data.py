"""Nucleus training data: point tiles (EndoNuke layout) and instance masks (DSB layout).

Layouts:
- points: ``DIR/images/NAME.png`` with ``DIR/labels/NAME.txt``, one nucleus a line, ``x y [class]``;
- masks: ``DIR/NAME_image.png`` with ``DIR/NAME_labels.png``, uint16 instances, 0 = background.

Every image is resampled once, on load, to the model's pixel size. A masks folder without a
pixel size gets one from its nuclei: ``NUCLEUS_DIAMETER_UM`` over the median equivalent diameter.
The split is by tile, fixed by a seed and the file names (see :func:`split_samples`).

Pure numpy / scipy (no torch): the trainer turns crops into tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..segmentation._intensity import resize_labels_nearest

NUCLEUS_DIAMETER_UM = 7.0
# Weak foreground from points: within this of a point is nucleus, beyond OUTER of every point is
# not; the ring between is left out of the loss (nuclei are not round, their size varies).
POINT_INNER_UM, POINT_OUTER_UM = 1.0, 5.0
# HED optical-density directions (skimage's rgb_from_hed), for the stain jitter.
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32
)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


@dataclass
class NucleusSample:
    """One annotated image at the model's pixel size.

    Attributes
    ----------
    name : str
        ``folder/stem``, unique across sources.
    rgb : ndarray
        (H, W, 3) uint8.
    points : ndarray
        (N, 2) float nucleus centres, (y, x) in pixels of ``rgb``.
    labels : ndarray or None
        (H, W) instance masks, when the source has them.
    source_mpp : float
        Pixel size of the file before resampling.
    """

    name: str
    rgb: np.ndarray
    points: np.ndarray
    labels: np.ndarray | None
    source_mpp: float


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def resample_rgb(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor`` (new / old pixels): box average when shrinking, then bilinear."""
    if abs(factor - 1.0) < 1e-3:
        return rgb
    from scipy import ndimage as ndi

    img = rgb.astype(np.float32)
    box = int(round(1.0 / factor)) if factor < 1 else 1
    if box > 1:
        img = ndi.uniform_filter(img, size=(box, box, 1), mode="nearest")
    out = ndi.zoom(img, (factor, factor, 1), order=1, mode="nearest", grid_mode=True)
    return out.clip(0, 255).round().astype(np.uint8)


def label_centroids(labels: np.ndarray) -> np.ndarray:
    """(N, 2) (y, x) centroids of the instances of a label image, in label order."""
    from scipy import ndimage as ndi

    ids = np.unique(labels)
    ids = ids[ids != 0]
    if len(ids) == 0:
        return np.zeros((0, 2), np.float32)
    return np.asarray(ndi.center_of_mass(np.ones_like(labels), labels, ids), np.float32)


def estimate_mask_mpp(labels: np.ndarray, diameter_um: float = NUCLEUS_DIAMETER_UM) -> float:
    """Pixel size making the median nucleus ``diameter_um`` across."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    if len(areas) == 0:
        raise ValueError("no nuclei in the mask: cannot estimate its pixel size")
    return float(diameter_um / (2.0 * math.sqrt(np.median(areas) / math.pi)))


def read_points_file(path: Path) -> np.ndarray:
    """(N, 2) (y, x) from an ``x y [class]`` text file."""
    text = path.read_text().strip()
    if not text:
        return np.zeros((0, 2), np.float32)
    xy = np.loadtxt(path, ndmin=2)[:, :2]
    return xy[:, ::-1].astype(np.float32)


def load_points_folder(folder: str | Path, mpp: float, model_mpp: float) -> list[NucleusSample]:
    """Tiles of an EndoNuke-layout folder, resampled from ``mpp`` to ``model_mpp``."""
    folder = Path(folder)
    images = sorted((folder / "images").glob("*.png"))
    if not images:
        raise FileNotFoundError(f"{folder}: no images/*.png (expected images/ and labels/)")
    samples = []
    factor = mpp / model_mpp
    for image_path in images:
        label_path = folder / "labels" / (image_path.stem + ".txt")
        if not label_path.is_file():
            continue
        rgb = resample_rgb(_read_rgb(image_path), factor)
        points = (read_points_file(label_path) + 0.5) * factor - 0.5
        samples.append(NucleusSample(f"{folder.name}/{image_path.stem}", rgb, points, None, mpp))
    if not samples:
        raise FileNotFoundError(f"{folder}: no image has a labels/NAME.txt")
    return samples


def load_masks_folder(
    folder: str | Path, model_mpp: float, mpp: float | None = None
) -> list[NucleusSample]:
    """Images of a DSB-layout folder; ``mpp=None`` estimates each image's from its nuclei."""
    from PIL import Image

    folder = Path(folder)
    samples = []
    for image_path in sorted(folder.glob("*_image.png")):
        stem = image_path.name[: -len("_image.png")]
        label_path = folder / f"{stem}_labels.png"
        if not label_path.is_file():
            continue
        with Image.open(label_path) as im:
            labels = np.asarray(im).astype(np.int32)
        image_mpp = estimate_mask_mpp(labels) if mpp is None else mpp
        factor = image_mpp / model_mpp
        rgb = resample_rgb(_read_rgb(image_path), factor)
        labels = resize_labels_nearest(labels, rgb.shape[:2])
        points = label_centroids(labels)
        samples.append(NucleusSample(f"{folder.name}/{stem}", rgb, points, labels, image_mpp))
    if not samples:
        raise FileNotFoundError(f"{folder}: no NAME_image.png with NAME_labels.png")
    return samples


@dataclass(frozen=True)
class Split:
    """Sample names per role: ``train``, ``tune`` (post-processing only) and ``val`` (never tuned on)."""

    train: tuple[str, ...]
    tune: tuple[str, ...]
    val: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"train": list(self.train), "tune": list(self.tune), "val": list(self.val)}


def _group(name: str) -> str:
    """Stratum of a sample: its folder plus the file-name prefix before the first '_'."""
    folder, stem = name.split("/", 1)
    return f"{folder}/{stem.split('_', 1)[0]}" if "_" in stem else folder


def split_samples(
    names: list[str],
    seed: int = 0,
    val_fraction: float = 0.15,
    tune_fraction: float = 0.10,
    holdout_folders: tuple[str, ...] = (),
) -> Split:
    """A split by tile, stratified by :func:`_group`, fixed by ``seed`` and the names.

    Per group ``ceil(val_fraction * n)`` tiles go to validation and ``floor(tune_fraction * n)``
    to tuning; every tile of a ``holdout_folders`` folder is validation (other slides).
    """
    groups: dict[str, list[str]] = {}
    val, tune, train = [], [], []
    for name in sorted(names):
        if name.split("/", 1)[0] in holdout_folders:
            val.append(name)
        else:
            groups.setdefault(_group(name), []).append(name)
    for key in sorted(groups):
        members = groups[key]
        rng = np.random.default_rng([seed, sum(key.encode())])
        order = [members[i] for i in rng.permutation(len(members))]
        n_val = math.ceil(val_fraction * len(members))
        n_tune = math.floor(tune_fraction * len(members))
        val += order[:n_val]
        tune += order[n_val : n_val + n_tune]
        train += order[n_val + n_tune :]
    return Split(tuple(sorted(train)), tuple(sorted(tune)), tuple(sorted(val)))


def heatmap_target(points: np.ndarray, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Max of unit Gaussians at ``points``; the pixel holding a point is exactly 1."""
    heat = np.zeros(shape, np.float32)
    r = int(math.ceil(3 * sigma_px))
    for y, x in points:
        iy, ix = int(round(y)), int(round(x))
        if not (0 <= iy < shape[0] and 0 <= ix < shape[1]):
            continue
        y0, y1, x0, x1 = (
            max(0, iy - r),
            min(shape[0], iy + r + 1),
            max(0, ix - r),
            min(shape[1], ix + r + 1),
        )
        yy, xx = np.mgrid[y0:y1, x0:x1]
        g = np.exp(-((yy - iy) ** 2 + (xx - ix) ** 2) / (2 * sigma_px**2))
        np.maximum(heat[y0:y1, x0:x1], g, out=heat[y0:y1, x0:x1])
    return heat


def foreground_target(
    labels: np.ndarray | None, points: np.ndarray, shape: tuple[int, int], mpp: float
) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight): masks where they exist, else a weak target from the points."""
    if labels is not None:
        return (labels > 0).astype(np.float32), np.ones(shape, np.float32)
    from scipy import ndimage as ndi

    seeds = np.ones(shape, bool)
    for y, x in points:
        iy, ix = int(round(y)), int(round(x))
        if 0 <= iy < shape[0] and 0 <= ix < shape[1]:
            seeds[iy, ix] = False
    if seeds.all():
        # A crop without points may still hold unannotated edges of nuclei: trust it lightly.
        return np.zeros(shape, np.float32), np.full(shape, 0.2, np.float32)
    dist_um = ndi.distance_transform_edt(seeds) * mpp
    target = (dist_um <= POINT_INNER_UM).astype(np.float32)
    weight = ((dist_um <= POINT_INNER_UM) | (dist_um >= POINT_OUTER_UM)).astype(np.float32)
    return target, weight


def stain_jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """HED optical-density jitter, brightness / contrast, gamma, blur and noise; uint8 out."""
    img = rgb.astype(np.float32)
    od = -np.log10(np.maximum(img, 1.0) / 255.0)
    hed = od @ _HED_FROM_RGB
    scale = rng.uniform([0.6, 0.6, 0.4], [1.5, 1.5, 1.8]).astype(np.float32)
    shift = rng.uniform(-0.04, 0.04, 3).astype(np.float32)
    hed = np.maximum(hed * scale + shift, 0.0)
    img = 255.0 * 10.0 ** (-(hed @ _RGB_FROM_HED))
    if rng.random() < 0.8:
        mean = img.mean()
        img = (img - mean) * rng.uniform(0.75, 1.3) + mean + rng.uniform(-25, 25)
    if rng.random() < 0.3:
        img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.1:
        img = np.repeat(img.mean(axis=-1, keepdims=True), 3, axis=-1)
    if rng.random() < 0.3:
        from scipy import ndimage as ndi

        s = rng.uniform(0.3, 1.3)
        img = ndi.gaussian_filter(img, sigma=(s, s, 0))
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(1, 6), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_crop(
    sample: NucleusSample,
    crop_px: int,
    rng: np.random.Generator,
    scale_range: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A ``crop_px`` square with ±``scale_range`` scale, flips and 90° turns; pads with white."""
    from scipy import ndimage as ndi

    scale = rng.uniform(1 - scale_range, 1 + scale_range)  # >1 magnifies
    src_px = max(8, int(round(crop_px / scale)))
    h, w = sample.rgb.shape[:2]
    y0 = int(rng.integers(min(0, h - src_px), max(0, h - src_px) + 1))
    x0 = int(rng.integers(min(0, w - src_px), max(0, w - src_px) + 1))
    rgb = np.full((src_px, src_px, 3), 255, np.uint8)
    labels = None if sample.labels is None else np.zeros((src_px, src_px), sample.labels.dtype)
    ys, xs = slice(max(0, y0), min(h, y0 + src_px)), slice(max(0, x0), min(w, x0 + src_px))
    dst = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    rgb[dst] = sample.rgb[ys, xs]
    if labels is not None:
        labels[dst] = sample.labels[ys, xs]
    pts = sample.points - np.array([y0, x0], np.float32)
    factor = crop_px / src_px
    if src_px != crop_px:
        rgb = ndi.zoom(
            rgb.astype(np.float32), (factor, factor, 1), order=1, grid_mode=True, mode="nearest"
        )
        rgb = rgb[:crop_px, :crop_px].clip(0, 255).astype(np.uint8)
        if labels is not None:
            labels = resize_labels_nearest(labels, (crop_px, crop_px))
        pts = (pts + 0.5) * factor - 0.5
    keep = (
        (pts[:, 0] > -0.5)
        & (pts[:, 1] > -0.5)
        & (pts[:, 0] < crop_px - 0.5)
        & (pts[:, 1] < crop_px - 0.5)
    )
    pts = pts[keep]
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    rgb, labels, pts = _turn(rgb, labels, pts, k, flip, crop_px)
    return rgb, pts, labels


def _turn(rgb, labels, pts, k: int, flip: bool, n: int):
    if flip:
        rgb = rgb[:, ::-1]
        labels = None if labels is None else labels[:, ::-1]
        pts = np.stack([pts[:, 0], n - 1 - pts[:, 1]], axis=1) if len(pts) else pts
    for _ in range(k):  # np.rot90 turns counter-clockwise: (y, x) -> (n - 1 - x, y)
        rgb = np.rot90(rgb)
        labels = None if labels is None else np.rot90(labels)
        pts = np.stack([n - 1 - pts[:, 1], pts[:, 0]], axis=1) if len(pts) else pts
    lab = None if labels is None else np.ascontiguousarray(labels)
    return np.ascontiguousarray(rgb), lab, pts.astype(np.float32).reshape(-1, 2)


def parse_source(text: str) -> tuple[Path, float | None]:
    """``DIR`` or ``DIR@MPP`` (the pixel size of the files in that folder)."""
    head, sep, tail = str(text).rpartition("@")
    if sep:
        try:
            return Path(head), float(tail)
        except ValueError:
            pass
    return Path(text), None


def load_sources(
    points: list[str] = (), masks: list[str] = (), model_mpp: float = 0.5, points_mpp: float = 0.5
) -> list[NucleusSample]:
    """All samples of ``points`` and ``masks`` folders (each ``DIR`` or ``DIR@MPP``)."""
    samples: list[NucleusSample] = []
    for text in points:
        folder, mpp = parse_source(text)
        samples += load_points_folder(folder, mpp or points_mpp, model_mpp)
    for text in masks:
        folder, mpp = parse_source(text)
        samples += load_masks_folder(folder, model_mpp, mpp)
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        raise ValueError("two sources share a folder name; rename one so sample names stay unique")
    return samples
