"""QA entry points: maps of one region or whole-slide pyramids, from arrays on one grid or from
whole layers (levels + frames) placed in one world or registered, RGBA overlays included."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_virtualstain.core import qa as Q
from napari_virtualstain.core import residual as R
from napari_virtualstain.core.geometry import Box
from napari_virtualstain.core.progress import Progress, drain
from napari_virtualstain.core.registration.frames import LayerFrame
from tests.support import PACKAGE_DATA

C = Box.from_corners  # (y0, x0, y1, x1), the end excluded


@pytest.fixture(scope="module")
def ki67():
    return tifffile.imread(PACKAGE_DATA / "OS-2-ndpi_Ki67.ome.tif")[:300, :300].copy()


def test_iter_qa_builds_every_map_and_reports_progress(ki67):
    from napari_virtualstain.core.registration import Registration

    real = ki67
    virtual = np.roll(ki67, 2, axis=1)
    labels = np.zeros((100, 120), np.int32)
    labels[10:30, 10:30] = 1
    req = Q.QARequest(
        virtual,
        real,
        0.227,
        C(50, 40, 150, 160),
        labels=labels,
        source=virtual,
        forward=lambda x: 255 - x,
        backward=lambda x: 255 - x,
    )
    gen = Q.iter_qa(req)
    fractions = [next(gen).fraction for _ in range(3)]
    assert fractions == sorted(fractions)
    result = drain(gen)
    assert set(result.seconds) == {*R.RESIDUAL_KINDS, "cycle", "disagreement"}
    assert result.maps["dab residual"][0].shape == (100, 120)
    assert np.abs(result.maps["cycle error (source - reconstruction)"][0]).max() == 0
    assert result.summary["cycle_mean_abs_rgb"] == 0 and result.summary["cycle_ssim"] == 1
    assert result.summary["nuclei_n_nuclei"] == 1 and result.summary["ssim"] < 1
    # with an identity registration the real slide is warped onto the virtual grid
    ident = Registration(
        ((1, 0, 0), (0, 1, 0), (0, 0, 1)), 0.227, 0.227, real.shape[:2], real.shape[:2], 1.0
    )
    warped = drain(
        Q.iter_qa(
            Q.QARequest(
                virtual, real, 0.227, C(50, 40, 150, 160), kinds=("rgb",), registration=ident
            )
        )
    )
    assert np.allclose(warped.maps["rgb residual"][0], result.maps["rgb residual"][0], atol=1e-6)
    with pytest.raises(ValueError, match="not on one grid"):
        Q.QARequest(virtual, real[:100], 0.227, C(0, 0, 10, 10))
    with pytest.raises(ValueError, match="not inside"):
        Q.QARequest(virtual, real, 0.227, C(0, 0, 10, 10**6))


def test_iter_lazy_qa_pyramids_match_eager_maps(ki67):
    from napari_virtualstain.core.registration import Registration

    virtual = np.roll(ki67, 3, axis=0)
    levels_v = [da.from_array(virtual, chunks=(128, 128, 3)), virtual[::2, ::2].copy()]
    levels_r = [da.from_array(ki67, chunks=(128, 128, 3)), ki67[::2, ::2].copy()]
    # eager_max_px=1: only the coarsest level is computed up front, the rest stays lazy
    result = drain(Q.iter_lazy_qa(levels_v, levels_r, 0.5, kinds=("rgb", "ssim"), eager_max_px=1))
    rgb_levels, kind = result.maps["rgb residual"]
    assert kind == "rgb" and isinstance(rgb_levels[0], da.Array)
    assert isinstance(rgb_levels[1], np.ndarray)  # the coarsest level is computed up front
    assert np.allclose(rgb_levels[0].compute(), R.residual_map("rgb", virtual, ki67))
    assert result.summary["summary_level_mpp"] == 1.0
    ident = Registration(
        ((1, 0, 0), (0, 1, 0), (0, 0, 1)), 0.5, 0.5, ki67.shape[:2], ki67.shape[:2], 1.0
    )
    warped = drain(
        Q.iter_lazy_qa(
            levels_v, levels_r, 0.5, ("rgb",), registration=ident, real_mpp=0.5, eager_max_px=1
        )
    )
    assert np.allclose(
        warped.maps["rgb residual"][0][0].compute(), rgb_levels[0].compute(), atol=1e-6
    )
    with pytest.raises(ValueError, match="not on one grid"):
        drain(Q.iter_lazy_qa(levels_v, [levels_r[0][:100]], 0.5))


MPP = 0.25


def _pyramid(img):
    return [img, img[::2, ::2].copy()]


def test_layer_qa_on_another_grid_of_the_same_world(ki67):
    """A virtual stain at half the resolution (as the overlay is at the model's µm/px), RGBA,
    placed by its own scale and translate over a full-resolution real stain."""
    real = ki67[:256, :256]
    half = real.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    virtual = np.dstack([half, np.full((128, 128), 255, np.uint8)])
    real_px = Q.LayerPixels.from_levels("real", [real], (MPP, MPP), mpp=MPP)
    # pixel centres of the half-resolution image sit half a real pixel in (napari's convention)
    placed = Q.LayerPixels.from_levels("virtual", [virtual], (2 * MPP, 2 * MPP), (MPP / 2,) * 2)
    result = drain(Q.iter_layer_qa(placed, real_px, 0, C(20, 30, 100, 110), kinds=("rgb",)))
    rgb = result.maps["rgb residual"][0]
    assert rgb.shape == (80, 80) and result.mpp == pytest.approx(2 * MPP)
    assert result.scale == (2 * MPP, 2 * MPP)
    assert result.translate == pytest.approx((MPP / 2 + 20 * 2 * MPP, MPP / 2 + 30 * 2 * MPP))
    aligned = np.abs(rgb).mean()
    # the same layer placed 3 real pixels off shows the misplacement: the placement is used
    off = Q.LayerPixels.from_levels("virtual", [virtual], (2 * MPP, 2 * MPP), (3.5 * MPP,) * 2)
    shifted = drain(Q.iter_layer_qa(off, real_px, 0, C(20, 30, 100, 110), kinds=("rgb",)))
    assert aligned < 0.5 * np.abs(shifted.maps["rgb residual"][0]).mean()


@pytest.mark.parametrize("multiscale", [False, True])
def test_layer_qa_cycle_and_nuclei_on_single_and_multiscale_layers(ki67, multiscale):
    """Source and nuclei layers with fewer levels than the virtual stain (once: IndexError)."""
    virtual = np.roll(ki67, 2, axis=1)
    levels = _pyramid(virtual) if multiscale else [virtual]
    level = len(levels) - 1
    labels = np.zeros(ki67.shape[:2], np.int32)
    labels[100:140, 100:140] = 1
    layers = {
        "virtual": Q.LayerPixels.from_levels("v", levels, (MPP, MPP)),
        "real": Q.LayerPixels.from_levels(
            "r", _pyramid(ki67) if multiscale else [ki67], (MPP,) * 2
        ),
        "source": Q.LayerPixels.from_levels("s", [virtual], (MPP, MPP)),  # one level only
        "labels": Q.LayerPixels.from_levels("n", [labels], (MPP, MPP)),
    }
    invert = lambda x: 255 - x  # noqa: E731 - a generator pair that reconstructs exactly
    box = C(20, 20, 140, 140)
    gen = Q.iter_layer_qa(
        layers["virtual"], layers["real"], level, box, kinds=("dab",), labels=layers["labels"],
        source=layers["source"], forward=invert, backward=invert,
    )  # fmt: skip
    reports = []
    result = drain(gen, reports.append)
    assert reports and all(isinstance(p, Progress) for p in reports)
    cycle = result.maps["cycle error (source - reconstruction)"][0]
    assert cycle.shape == (120, 120) and np.abs(cycle).max() == 0
    assert result.summary["nuclei_n_nuclei"] == 1
    assert set(np.unique(result.maps["DAB disagreement"][0])) <= {0, 1, 2}


def test_layer_qa_refuses_a_real_stain_that_misses_the_region(ki67):
    virtual = Q.LayerPixels.from_levels("v", [ki67], (MPP, MPP))
    real = Q.LayerPixels.from_levels("r", [ki67[:100]], (MPP, MPP))
    with pytest.raises(ValueError, match="register them first"):
        drain(Q.iter_layer_qa(virtual, real, 0, C(0, 0, 200, 200), kinds=("rgb",)))
    with pytest.raises(ValueError, match="register them first"):
        drain(Q.iter_layer_lazy_qa(virtual, real, kinds=("rgb",)))


def test_lazy_layer_qa_computes_small_levels_in_the_worker(ki67):
    rgba = np.dstack([ki67, np.full(ki67.shape[:2], 255, np.uint8)])
    virtual = Q.LayerPixels.from_levels("v", _pyramid(rgba), (MPP, MPP))
    real = Q.LayerPixels.from_levels("r", _pyramid(np.roll(ki67, 3, axis=0)), (MPP, MPP))
    eager = drain(Q.iter_layer_lazy_qa(virtual, real, kinds=("dab",)))
    levels, _ = eager.maps["dab residual"]
    assert all(isinstance(lv, np.ndarray) for lv in levels)  # 300² fits the eager budget
    assert eager.scale == (MPP, MPP) and eager.translate == (0.0, 0.0)
    lazy = drain(
        Q.iter_lazy_qa(list(virtual.levels), list(real.levels), MPP, ("dab",), eager_max_px=1)
    )
    lazy_levels, _ = lazy.maps["dab residual"]
    assert isinstance(lazy_levels[0], da.Array) and isinstance(lazy_levels[1], np.ndarray)
    assert np.allclose(lazy_levels[0].compute(), levels[0], atol=1e-5)
    # another grid of the same world goes through the exact world registration
    half = Q.LayerPixels.from_levels("r2", [ki67[::2, ::2].copy()], (2 * MPP,) * 2, (MPP / 2,) * 2)
    placed = drain(Q.iter_layer_lazy_qa(virtual, half, kinds=("rgb",)))
    assert placed.maps["rgb residual"][0][0].shape == ki67.shape[:2]


def test_layer_frame_of_layer_values():
    frame = LayerFrame.from_layer_values([(300, 300, 3), (150, 150, 3)], (1, MPP, MPP))
    assert frame.mpp == MPP and frame.level_mpps == [MPP, 2 * MPP]


def test_a_real_stain_of_another_stain_than_the_virtual_one_is_refused():
    from napari_virtualstain.core.qa import LayerPixels, check_real_stain, iter_layer_qa
    from napari_virtualstain.core.samples import sample_path

    he = tifffile.imread(sample_path("he"))[:1024, :1024]
    ki67 = tifffile.imread(sample_path("ki67"))[:1024, :1024]
    real_ki67 = LayerPixels.from_levels("OS-2 Ki-67", [ki67], (0.5, 0.5), mpp=0.5)
    real_he = LayerPixels.from_levels("OS-1 H&E", [he], (0.5, 0.5), mpp=0.5)
    check_real_stain(real_he, "ki67->he")  # a virtual H&E against a real H&E: fine
    check_real_stain(real_ki67, "he->ki67")  # a virtual Ki-67 against a real Ki-67: fine
    check_real_stain(real_ki67, None)  # no provenance: not checked
    with pytest.raises(ValueError, match="looks like hematoxylin \\+ DAB.*virtual stain is he"):
        check_real_stain(real_ki67, "ki67->he")
    virtual = LayerPixels.from_levels("virtual H&E", [he], (0.5, 0.5), mpp=0.5)
    gen = iter_layer_qa(virtual, real_ki67, 0, Box(0, 0, 256, 256), virtual_direction="ki67->he")
    with pytest.raises(ValueError, match="compare it with a real he slide"):
        for _ in gen:
            pass
