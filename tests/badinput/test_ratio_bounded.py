"""``ratio`` on a flat (single-level) slide reads around the ROI, not the whole slide."""

from __future__ import annotations

import time

import numpy as np
import tifffile

from napari_virtualstain.core.geojson import roi_features, write_geojson
from napari_virtualstain.core.io import guard
from napari_virtualstain.core.roi import ROI
from tests.support.badinput import checksums, invoke
from tests.support.ki67_synthetic import grid_of_nuclei

SIDE_PX, TILE_PX, MPP = 16384, 512, 0.5


def _flat_slide(path):
    """A flat tiled TIFF: glass everywhere, Ki-67 nuclei in one tile near the centre."""
    glass = np.full((TILE_PX, TILE_PX, 3), 245, np.uint8)
    tissue = glass.copy()
    nuclei = grid_of_nuclei(10, 10, mpp=MPP).rgb
    tissue[: nuclei.shape[0], : nuclei.shape[1]] = nuclei
    n = SIDE_PX // TILE_PX
    centre = (n // 2, n // 2)
    tiles = (tissue if (i, j) == centre else glass for i in range(n) for j in range(n))
    tifffile.imwrite(path, tiles, shape=(SIDE_PX, SIDE_PX, 3), dtype=np.uint8,
                     tile=(TILE_PX, TILE_PX), compression="zlib", photometric="rgb")  # fmt: skip
    return path, centre[0] * TILE_PX


def test_ratio_reads_scale_with_the_roi_not_the_slide(tmp_path, monkeypatch):
    slide, origin_px = _flat_slide(tmp_path / "flat.tif")
    roi = tmp_path / "roi.geojson"
    side_um = 320 * MPP  # the nuclei block, 320 px
    write_geojson(roi, roi_features([ROI.rectangle("hot", origin_px * MPP, origin_px * MPP,
                                                   side_um, side_um)], MPP))  # fmt: skip
    reads = []
    real = guard.GuardedArray.__getitem__

    def counting(self, key):
        reads.append(key)
        return real(self, key)

    monkeypatch.setattr(guard.GuardedArray, "__getitem__", counting)
    before = checksums(tmp_path)
    t0 = time.perf_counter()
    res = invoke("ratio", slide, "--roi", roi, "--mpp", MPP, "--json", tmp_path / "r.json")
    seconds = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    assert "hot:" in res.output and "positive" in res.output
    total = (SIDE_PX // TILE_PX) ** 2
    print(f"flat {SIDE_PX}² slide, 320 px ROI: {len(reads)} of {total} tiles read, {seconds:.1f} s")
    # the ROI's neighbourhood (ROI + 2048 px context per side) is ~10 x 10 tiles; the whole
    # slide would be all 1024
    assert len(reads) <= 160
    after = checksums(tmp_path)
    assert {k: v for k, v in after.items() if k != "r.json"} == before
