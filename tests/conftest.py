"""Shared fixtures: small real slides written with tifffile / zarr into tmp_path."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.support.train_tiles import colour_transform, texture, write_set

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config) -> None:
    """The tests' measurements (precision, layout, halo, receptive field) and the widgets'
    default tile cache go to a folder of this run, not to the user's cache (unless
    ``NAPARI_VIRTUALSTAIN_CACHE`` is set already): a test never changes what the user's
    next session recalls."""
    if os.environ.get("NAPARI_VIRTUALSTAIN_CACHE"):
        return
    folder = tempfile.mkdtemp(prefix="napari-virtualstain-tests-")
    os.environ["NAPARI_VIRTUALSTAIN_CACHE"] = folder
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def tissue_like_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic pink/purple texture with white background corners, (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [
            200 + 30 * np.sin(xx / 17.0),
            120 + 40 * np.cos(yy / 23.0),
            190 + 20 * np.sin((xx + yy) / 31.0),
        ],
        axis=-1,
    )
    img = (base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
    img[: h // 5, : w // 5] = 255
    return img


def write_pyramidal_ome_tiff(
    path: Path, base: np.ndarray, mpp: float, n_levels: int, tile: int = 128
) -> Path:
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        meta = {
            "axes": "YXS",
            "PhysicalSizeX": mpp,
            "PhysicalSizeY": mpp,
            "PhysicalSizeXUnit": "µm",
        }
        tif.write(
            base,
            subifds=n_levels - 1,
            tile=(tile, tile),
            photometric="rgb",
            compression="zlib",
            metadata=meta,
        )
        level = base
        for _ in range(n_levels - 1):
            level = level[::2, ::2]
            tif.write(
                level, subfiletype=1, tile=(tile, tile), photometric="rgb", compression="zlib"
            )
    return path


def write_svs_like(path: Path, base: np.ndarray, mpp: float = 0.5, mag: float = 20.0) -> Path:
    """A single-level Aperio-style TIFF (tifffile recognises SVS by its ImageDescription)."""
    import tifffile

    desc = f"Aperio Image Library v12.0.15 \n{base.shape[1]}x{base.shape[0]} (256x256) JPEG/RGB Q=70|AppMag = {mag:g}|MPP = {mpp}"
    tifffile.imwrite(
        path, base, tile=(256, 256), photometric="rgb", compression="zlib", description=desc
    )
    return path


@pytest.fixture
def rgb_small() -> np.ndarray:
    return tissue_like_rgb(600, 800)


@pytest.fixture
def ome_pyramid(tmp_path, rgb_small) -> Path:
    return write_pyramidal_ome_tiff(tmp_path / "pyramid.ome.tif", rgb_small, mpp=0.25, n_levels=3)


@pytest.fixture(scope="session")
def svs_like(tmp_path_factory) -> Path:
    """A 4608 x 4200 single-level SVS-like file (larger than 4k: needs built levels)."""
    base = np.tile(tissue_like_rgb(512, 600, seed=1), (9, 7, 1))
    return write_svs_like(tmp_path_factory.mktemp("svs") / "single.svs", base)


@pytest.fixture
def sample_paths() -> dict[str, Path]:
    from napari_virtualstain.core.samples import SAMPLES, sample_path

    return {key: sample_path(key) for key in SAMPLES}


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not next to this checkout")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Trainer tests run single-threaded: on a shared 2-core box two threads spin on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def unpaired(tmp_path):
    from napari_virtualstain.core.train.layouts import UnpairedSplit

    he = [texture(i) for i in range(8)]
    ihc = [colour_transform(texture(100 + i)) for i in range(8)]
    return UnpairedSplit(
        train_a=write_set(tmp_path / "trainA", he[:6], "t"),
        train_b=write_set(tmp_path / "trainB", ihc[:6], "u"),
        test_a=write_set(tmp_path / "testA", he[6:], "v"),
        test_b=write_set(tmp_path / "testB", ihc[6:], "w"),
    )


@pytest.fixture
def paired(tmp_path):
    from napari_virtualstain.core.train.layouts import PairedSplit

    he = [texture(i) for i in range(10)]
    ihc = [colour_transform(t) for t in he]
    he_paths = write_set(tmp_path / "HE", he, "p")
    ihc_paths = write_set(tmp_path / "IHC", ihc, "p")
    pairs = tuple(zip(he_paths, ihc_paths, strict=True))
    return PairedSplit(train=pairs[:8], test=pairs[8:])
