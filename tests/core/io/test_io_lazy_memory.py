"""Opening and viewing a large flat TIFF must not read it whole (peak memory measured)."""

import tracemalloc

import numpy as np
import pytest

from napari_virtualstain.core.io import open_slide

SIDE_PX = 6144
TILE_PX = 256


def write_flat_tiff(path, side_px=SIDE_PX):
    import tifffile

    rng = np.random.default_rng(0)
    pattern = rng.integers(120, 230, (TILE_PX, TILE_PX, 3), dtype=np.uint8)

    def tiles():
        n = side_px // TILE_PX
        for i in range(n * n):
            yield np.roll(pattern, i, axis=1)

    tifffile.imwrite(
        path,
        tiles(),
        shape=(side_px, side_px, 3),
        dtype=np.uint8,
        tile=(TILE_PX, TILE_PX),
        photometric="rgb",
        compression="zlib",
    )
    return path


@pytest.mark.slow
def test_flat_tiff_is_read_lazily(tmp_path):
    path = write_flat_tiff(tmp_path / "flat.tif")
    full_bytes = SIDE_PX * SIDE_PX * 3

    open_slide(write_flat_tiff(tmp_path / "warmup.tif", side_px=TILE_PX))  # imports are not data
    tracemalloc.start()
    slide = open_slide(path)
    _, peak_open = tracemalloc.get_traced_memory()
    assert slide.built_levels >= 3
    # What napari does: the coarsest level for the overview, then a 1024² viewport at level 0.
    overview = slide.levels[-1].compute()
    viewport = slide.read_region(0, 2048, 2048, 1024, 1024)
    _, peak_view = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert overview.shape[0] <= 1024 and viewport.shape == (1024, 1024, 3)
    assert peak_open < 0.02 * full_bytes, f"opening used {peak_open / 1e6:.1f} MB"
    assert peak_view < 0.25 * full_bytes, (
        f"viewing used {peak_view / 1e6:.1f} MB of {full_bytes / 1e6:.0f} MB"
    )
