"""Nucleus extents for the learned segmenter: seeds from the heatmap, extents from optical density.

The learned foreground was trained on H&E / hematoxylin masks (DSB2018) and point-only IHC
(EndoNuke), so it under-covers strongly DAB-stained nuclei: a brown nucleus got only its seed
disk, which made Ki-67 *area* ratios about half the truth on rendered nuclei with known areas.
Here each seed's extent is the region around it whose optical density is above half-way between
its cell's background and the seed's own density (a half-maximum contour), joined with the
learned foreground. A large, dark (DAB) nucleus can hold several heatmap peaks; touching pieces
with no density valley between them and a dark interior are merged back into one nucleus.
"""

from __future__ import annotations

import numpy as np

MAX_RADIUS_UM = 6.0  # a seed's extent stays within this distance of the seed
HALF_MAX = 0.5  # extent: OD >= background + HALF_MAX * (seed OD - background)
DARK_OD = 0.5  # only nuclei this dark (mean RGB OD) are merged: brown DAB, not pale hematoxylin
VALLEY_RATIO = 0.85  # merge when the shared boundary's OD >= this x the darker-side interior's
# ... and the shared boundary is long next to the smaller piece (>= this x sqrt(its area)): a
# blob cut along a chord (about 1.6 for halves of a disk), not two nuclei that merely touch.
CUT_RATIO = 1.2


def mean_od(rgb: np.ndarray) -> np.ndarray:
    """Mean optical density of the RGB channels (glass about 0, any stain > 0), lightly smoothed."""
    from scipy import ndimage as ndi

    od = -np.log10(np.clip(rgb[..., :3].astype(np.float32), 1.0, 255.0) / 255.0).mean(-1)
    return ndi.gaussian_filter(od, 0.7)


def seeded_extents(
    markers: np.ndarray,
    heat: np.ndarray,
    fg_mask: np.ndarray,
    od: np.ndarray,
    mpp: float,
    seed_radius_um: float,
) -> np.ndarray:
    """(H, W) int32 labels: each seed's half-maximum OD region, its learned foreground, its disk."""
    from scipy import ndimage as ndi
    from skimage import segmentation

    n = int(markers.max())
    dist = ndi.distance_transform_edt(markers == 0)
    cells = segmentation.watershed(-heat, markers, mask=dist <= MAX_RADIUS_UM / mpp)
    disk = dist <= max(1.0, seed_radius_um / mpp)
    index = np.arange(1, n + 1)
    seed_od = np.asarray(ndi.mean(od, labels=cells * disk, index=index), np.float32)
    background = np.asarray(
        ndi.labeled_comprehension(od, cells, index, lambda v: np.percentile(v, 10), float, 0.0),
        np.float32,
    )
    threshold = np.zeros(n + 1, np.float32)
    threshold[1:] = background + HALF_MAX * (seed_od - background)
    keep = ((od >= threshold[cells]) | fg_mask | disk) & (cells > 0)
    # One connected piece per seed: flood again from the seeds inside what is kept.
    return segmentation.watershed(-heat, markers, mask=keep).astype(np.int32)


def merge_dark_oversplit(labels: np.ndarray, od: np.ndarray) -> np.ndarray:
    """Merge touching dark labels with no OD valley along their shared boundary."""
    from scipy import ndimage as ndi

    n = int(labels.max())
    if n < 2:
        return labels
    keys, sums, counts = _boundary_od(labels, od, n)
    if len(keys) == 0:
        return labels
    index = np.arange(1, n + 1)
    inner = np.concatenate([[0.0], np.asarray(ndi.median(od, labels, index))])
    area_px = np.bincount(labels.ravel(), minlength=n + 1)
    parent = np.arange(n + 1)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for key, total, count in zip(keys, sums, counts, strict=True):
        a, b = divmod(int(key), n + 1)
        darker_side = min(inner[a], inner[b])
        cut = count >= CUT_RATIO * np.sqrt(min(area_px[a], area_px[b]))
        if cut and darker_side >= DARK_OD and total / count >= VALLEY_RATIO * darker_side:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(n + 1)])
    _, relabelled = np.unique(roots, return_inverse=True)  # root 0 (background) stays 0
    return relabelled.astype(labels.dtype)[labels]


def _boundary_od(labels: np.ndarray, od: np.ndarray, n: int):
    """Per touching label pair (key a * (n + 1) + b, a < b): summed boundary OD and pixel count."""
    keys, values = [], []
    for a, b, oa, ob in (
        (labels[:, :-1], labels[:, 1:], od[:, :-1], od[:, 1:]),
        (labels[:-1], labels[1:], od[:-1], od[1:]),
    ):
        touching = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[touching], b[touching]), np.maximum(a[touching], b[touching])
        keys.append(lo.astype(np.int64) * (n + 1) + hi)
        values.append((oa[touching] + ob[touching]) / 2)
    key, value = np.concatenate(keys), np.concatenate(values)
    if key.size == 0:
        return key, key, key
    order = np.argsort(key, kind="stable")
    key, value = key[order], value[order]
    unique, start, count = np.unique(key, return_index=True, return_counts=True)
    return unique, np.add.reduceat(value, start), count
