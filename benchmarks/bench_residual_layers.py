"""Seconds to build each QA residual layer for a 2048 x 2048 view, on CPU.

Baselines measured in the same run: a bare numpy difference of the two images (the least any
residual can cost) and scikit-image's full SSIM map for the local-SSIM layer. Printed: seconds,
and the ratio to the baseline. Run: ``.venv/bin/python benchmarks/bench_residual_layers.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import tifffile
from skimage.metrics import structural_similarity

from napari_virtualstain.core import residual as R

DATA = Path(__file__).resolve().parents[1] / "src/napari_virtualstain/data"
VIEW_PX = 2048


def best_of(fn, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    real = tifffile.imread(DATA / "OS-2-ndpi_Ki67.ome.tif")[:VIEW_PX, :VIEW_PX].copy()
    virtual = np.roll(real, (3, -2), axis=(0, 1))  # a stand-in virtual stain, slightly off
    bg = (R.sample_background(virtual), R.sample_background(real))
    base = best_of(lambda: virtual.astype(np.float32) - real.astype(np.float32))
    sk = best_of(
        lambda: structural_similarity(
            virtual,
            real,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=-1,
            data_range=255,
            full=True,
        ),
        repeats=1,
    )
    print(
        f"view {VIEW_PX} x {VIEW_PX} px; baseline numpy difference {base:.3f} s; "
        f"skimage SSIM map {sk:.2f} s"
    )
    print(f"{'layer':<14}{'in memory s':>12}{'x numpy diff':>14}{'lazy 512-px s':>15}{'ratio':>8}")
    for kind in R.RESIDUAL_KINDS:
        eager = best_of(lambda k=kind: R.residual_map(k, virtual, real, backgrounds=bg), 1)
        lazy_arr = R.lazy_residual_map(
            kind, da.from_array(virtual), da.from_array(real), chunk_px=512, backgrounds=bg
        )
        with dask.config.set(scheduler="threads", num_workers=2):
            lazy = best_of(lazy_arr.compute, 1)
        extra = f"  (skimage SSIM map: x{eager / sk:.2f})" if kind == "ssim" else ""
        print(
            f"{kind:<14}{eager:>12.2f}{eager / base:>14.1f}{lazy:>15.2f}{lazy / eager:>8.2f}{extra}"
        )
    labels = np.zeros(real.shape[:2], np.int32)
    yy, xx = np.mgrid[0:VIEW_PX:32, 0:VIEW_PX:32]
    for i, (y, x) in enumerate(zip(yy.ravel(), xx.ravel(), strict=True), start=1):
        labels[y + 8 : y + 24, x + 8 : x + 24] = i  # 4096 square "nuclei"
    dis = best_of(lambda: R.dab_disagreement(labels, virtual, real, mpp=0.227), 1)
    print(f"{'disagreement':<14}{dis:>12.2f}{dis / base:>14.1f}   ({labels.max()} nuclei)")
    src = virtual
    cyc = best_of(lambda: R.reconstruct(src, lambda x: 255 - x, lambda x: 255 - x), 1)
    cyc_map = best_of(lambda: R.residual_map("rgb", src, real), 1)
    print(f"cycle error map (without the generators' own time): {cyc + cyc_map:.2f} s")


if __name__ == "__main__":
    main()
