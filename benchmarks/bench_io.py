"""Slide I/O: time to open each bundled sample, and peak memory when opening and panning a
20k x 20k synthetic pyramid versus a 2k x 2k one (ratio printed; both measured in this run).

Run: .venv/bin/python benchmarks/bench_io.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE_PX = 256
VIEW_H, VIEW_W = 1080, 1920


def write_synthetic_pyramid(path: Path, side_px: int) -> Path:
    """A tiled, zlib-compressed pyramidal OME-TIFF written tile by tile (never whole in memory)."""
    import tifffile

    rng = np.random.default_rng(0)
    tiles = [rng.integers(100, 240, (TILE_PX, TILE_PX, 3), dtype=np.uint8) for _ in range(8)]

    def tile_iter(side: int):
        n = -(-side // TILE_PX)
        for i in range(n * n):
            yield tiles[i % len(tiles)]

    sides = [side_px]
    while sides[-1] > 1024:
        sides.append(sides[-1] // 2)
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        opts = {
            "tile": (TILE_PX, TILE_PX),
            "photometric": "rgb",
            "compression": "zlib",
            "compressionargs": {"level": 1},
            "dtype": np.uint8,
        }
        tif.write(
            tile_iter(sides[0]),
            shape=(sides[0], sides[0], 3),
            subifds=len(sides) - 1,
            metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25},
            **opts,
        )
        for side in sides[1:]:
            tif.write(tile_iter(side), shape=(side, side, 3), subfiletype=1, **opts)
    return path


CHILD = r"""
import json, resource, sys, time
import numpy as np
from napari_virtualstain.core.io import open_slide
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
slide = open_slide(sys.argv[1])
t_open = time.perf_counter() - t0
after_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
slide.levels[-1].compute()  # overview
h, w = slide.shape
for level in range(len(slide.levels) - 1, -1, -1):  # zoom in, then pan across level 0
    ds = slide.downsamples[level]
    slide.read_region(level, int(h / ds / 2) - 540, int(w / ds / 2) - 960, 1080, 1920)
for y, x in [(0, 0), (h // 3, w // 3), (h // 2, w // 5), (max(0, h - 1080), max(0, w - 1920))]:
    slide.read_region(0, y, x, 1080, 1920)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"open_s": t_open, "open_rss_mb": (after_open - base) / 1024,
                  "pan_rss_mb": (peak - base) / 1024, "levels": len(slide.levels)}))
"""


def measure(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from napari_virtualstain.core.io import open_slide
    from napari_virtualstain.core.samples import SAMPLES, sample_path

    print("Time to open each bundled sample (metadata only; median of 5):")
    for key in SAMPLES:
        open_slide(sample_path(key))  # warm the page cache and imports
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            open_slide(sample_path(key))
            times.append(time.perf_counter() - t0)
        print(f"  {SAMPLES[key]:<28} {np.median(times) * 1000:7.1f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for side in (2000, 20000):
            t0 = time.perf_counter()
            path = write_synthetic_pyramid(Path(tmp) / f"synthetic_{side}.ome.tif", side)
            print(
                f"wrote {side} x {side} pyramid in {time.perf_counter() - t0:.1f} s "
                f"({path.stat().st_size / 1e6:.0f} MB on disk)"
            )
            results[side] = measure(path)
    small, large = results[2000], results[20000]
    print(
        "\nPeak RSS above the interpreter baseline (open, then overview + zoom + 4 pans of 1920x1080):"
    )
    for side, r in results.items():
        print(
            f"  {side:>6} x {side:<6} open {r['open_s'] * 1000:6.1f} ms, open {r['open_rss_mb']:6.1f} MB, "
            f"open+pan {r['pan_rss_mb']:6.1f} MB, {r['levels']} levels"
        )
    print(
        f"  ratio 20k/2k peak (open+pan): {large['pan_rss_mb'] / max(small['pan_rss_mb'], 1e-3):.2f}x "
        f"for {100:.0f}x the pixels"
    )


if __name__ == "__main__":
    main()
