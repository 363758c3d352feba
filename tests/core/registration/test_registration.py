"""Registration: recovery of a known affine + smooth deformation on a real slide, and the
transform's mapping of points, GeoJSON, ROIs, images and labels in both directions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_virtualstain.core.registration import (
    Registration,
    RegistrationConfig,
    RegistrationError,
    register_images,
    tissue_signal_image,
)
from tests.support import PACKAGE_DATA

DATA = PACKAGE_DATA
CMU_MPP = 0.499


@pytest.fixture(scope="module")
def cmu():
    """CMU-1 small region at half resolution: a real tissue outline, 1484 x 1110 px."""
    return tifffile.imread(DATA / "cmu-1-small-region.svs")[::2, ::2].copy(), 2 * CMU_MPP


def _deform(img, angle_deg, flip, shift_px, amp_px):
    """moving(q) = fixed(h(q)): a rotation (after a mirror flip), 3 % scale, shift, sinusoids."""
    h_px, w_px = img.shape[:2]
    a = np.deg2rad(angle_deg)
    r = 1.03 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    r = r @ np.diag([1.0, -1.0]) if flip else r
    c = np.array([h_px / 2, w_px / 2])

    def h(q):
        wave = np.stack(
            [np.sin(2 * np.pi * q[:, 1] / 500), np.cos(2 * np.pi * q[:, 0] / 400)], axis=1
        )
        return (q - c) @ r.T + c + np.asarray(shift_px) + amp_px * wave

    q = np.indices((h_px, w_px)).reshape(2, -1).T.astype(float)
    src = h(q).T
    moving = np.stack(
        [
            ndi.map_coordinates(img[..., k], src, order=1, cval=245).reshape(h_px, w_px)
            for k in range(3)
        ],
        axis=-1,
    )
    return moving, h


@pytest.mark.slow
def test_recovers_affine_flip_and_smooth_deformation(cmu):
    img, mpp = cmu
    moving, h = _deform(img, angle_deg=25, flip=True, shift_px=(40, -30), amp_px=6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reg = register_images(img, moving, mpp, mpp)
        _, moving_tissue = tissue_signal_image(moving)
    # target registration error on tissue points of the moving slide, in µm
    rng = np.random.default_rng(0)
    q = np.argwhere(moving_tissue)[rng.choice(int(moving_tissue.sum()), 300)].astype(float)
    p = h(q)
    inside = np.all((p > 0) & (p < img.shape[:2]), axis=1)
    tre_um = np.linalg.norm(reg.map_points(p[inside]) - q[inside], axis=1) * mpp
    back_um = np.linalg.norm(reg.map_points(q[inside], "moving_to_fixed") - p[inside], axis=1) * mpp
    print(
        f"TRE {tre_um.mean():.2f} µm mean, {np.percentile(tre_um, 90):.2f} µm p90 "
        f"(pixel {mpp:.3f} µm; deformation amplitude {6 * mpp:.1f} µm); score {reg.score:.3f}"
    )
    assert np.linalg.det(reg.affine[:2, :2]) < 0  # the flip was found
    assert reg.displacement_um is not None  # the smooth part was modelled
    assert tre_um.mean() < 3.0 * mpp and np.percentile(tre_um, 90) < 4.0 * mpp
    assert back_um.mean() < 3.0 * mpp
    # the affine part alone is worse: the field carries the deformation
    affine_only = Registration(reg.matrix_um, mpp, mpp, img.shape[:2], img.shape[:2], reg.score)
    assert np.linalg.norm(affine_only.map_points(p[inside]) - q[inside], axis=1).mean() * mpp > (
        tre_um.mean()
    )


@pytest.mark.slow
def test_unrelated_sections_fail_with_the_score(cmu):
    img, mpp = cmu
    ki67 = tifffile.imread(DATA / "OS-2-ndpi_Ki67.ome.tif")
    quick = RegistrationConfig(angle_step_deg=6.0, nonrigid=False)  # failing needs no detail
    with pytest.raises(RegistrationError, match=r"match score \(NCC\) -?0\.\d+ \(minimum"):
        register_images(img, ki67, mpp, 0.227, quick)


def test_no_tissue_is_an_error(cmu):
    img, mpp = cmu
    with pytest.raises(RegistrationError, match="no tissue found in the moving image"):
        register_images(img, np.full((200, 200, 3), 245, np.uint8), mpp, 1.0)


def _known_registration(with_field: bool) -> Registration:
    a = np.deg2rad(30)
    m = np.eye(3)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:2, :2] = m[:2, :2] @ np.diag([1.0, -1.0])
    m[:2, 2] = [20.0, 35.0]
    field = None
    if with_field:
        gy, gx = np.mgrid[0:12, 0:12]
        field = np.stack([2 * np.sin(gx / 3.0), 1.5 * np.cos(gy / 4.0)]).astype(np.float32)
    return Registration(
        tuple(map(tuple, m)),
        0.5,
        0.25,
        (200, 200),
        (400, 400),
        0.9,
        field_spacing_um=10.0 if with_field else None,
        displacement_um=field,
    )


@pytest.mark.parametrize("with_field", [False, True])
def test_points_round_trip_and_serialisation(tmp_path, with_field):
    reg = _known_registration(with_field)
    pts = np.random.default_rng(0).uniform(0, 200, (50, 2))
    there = reg.map_points(pts, "fixed_to_moving")
    assert np.allclose(reg.map_points(there, "moving_to_fixed"), pts, atol=1e-3)
    loaded = Registration.load(reg.save(tmp_path / "reg.json"))
    assert np.allclose(loaded.map_points(pts), there, atol=1e-2)
    assert loaded.is_affine == (not with_field)
    (tmp_path / "bad.json").write_text('{"type": "other"}')
    with pytest.raises(ValueError, match="bad.json"):
        Registration.load(tmp_path / "bad.json")


def test_geojson_and_rois_map_both_ways():
    from napari_virtualstain.core.roi import ROI

    reg = _known_registration(True)
    feature = {
        "type": "Feature",
        "properties": {"name": "tumour"},
        "geometry": {"type": "Polygon", "coordinates": [[[10, 20], [60, 20], [60, 90], [10, 20]]]},
    }
    moved = reg.map_geojson(feature)
    assert moved["properties"] == {"name": "tumour"}
    xy = np.asarray(moved["geometry"]["coordinates"][0])
    assert np.allclose(
        xy[:, ::-1], reg.map_points(np.array([[20, 10], [20, 60], [90, 60], [20, 10]]))
    )
    back = reg.map_geojson(moved, "moving_to_fixed")
    assert np.allclose(
        back["geometry"]["coordinates"], feature["geometry"]["coordinates"], atol=1e-2
    )
    roi = ROI.rectangle("r", 10.0, 10.0, 30.0, 40.0)
    (mapped,) = reg.map_rois([roi])
    # a flip keeps areas (|det| = 1) and a smooth field changes them only a little
    assert mapped.area_um2 == pytest.approx(roi.area_um2, rel=0.05)
    with pytest.raises(ValueError, match="direction"):
        reg.map_points(np.zeros((1, 2)), "sideways")


@pytest.mark.parametrize("with_field", [False, True])
def test_mapped_rois_keep_their_holes(with_field):
    from napari_virtualstain.core.roi import ROI

    reg = _known_registration(with_field)
    hole = [(40.0, 40.0), (40.0, 60.0), (60.0, 60.0), (60.0, 40.0)]
    roi = ROI.polygon("tumour", [(20, 20), (20, 90), (90, 90), (90, 20)], [hole])
    (mapped,) = reg.map_rois([roi])
    assert mapped.name == "tumour" and len(mapped.holes) == 1
    assert np.allclose(mapped.holes_um()[0], reg.fixed_to_moving_um(np.asarray(hole)))
    # the hole's 400 µm² stay out: an outline-only mapping would count 4900 µm² here
    assert mapped.area_um2 == pytest.approx(4900 - 400, rel=0.05)
    assert mapped.outer_area_um2 - mapped.area_um2 == pytest.approx(400, rel=0.05)
    (back,) = reg.map_rois([mapped], "moving_to_fixed")
    assert np.allclose(back.holes_um()[0], hole, atol=1e-2)


def test_warp_is_lazy_and_matches_direct_resampling():
    reg = _known_registration(True)
    rng = np.random.default_rng(1)
    moving = ndi.gaussian_filter(rng.uniform(0, 255, (400, 400, 3)), (3, 3, 0)).astype(np.uint8)
    lazy = reg.warp(moving, (200, 200), out_mpp=0.5, moving_mpp=0.25, chunk_px=64)
    assert lazy.chunks[0] == (64, 64, 64, 8)
    out = lazy.compute()
    grid = np.indices((200, 200)).reshape(2, -1).T * 0.5
    src = (reg.fixed_to_moving_um(grid) / 0.25).T
    direct = ndi.map_coordinates(moving[..., 1].astype(float), src, order=1, cval=255)
    inside = np.all((src >= 0) & (src <= 399), axis=0)
    assert np.abs(out[..., 1].ravel()[inside].astype(float) - direct[inside]).max() <= 1.0
    outside = np.any((src < -0.5) | (src > 399.5), axis=0)  # half a pixel is edge, not outside
    assert outside.any() and np.all(out[..., 1].ravel()[outside] == 255)
    labels = np.zeros((400, 400), np.uint16)
    labels[100:200, 150:250] = 7
    labels[250:300, 50:120] = 3
    warped = reg.warp(labels, (200, 200), 0.5, 0.25, order=0, cval=0).compute()
    assert set(np.unique(warped)) <= {0, 3, 7} and (warped == 7).any()


def test_layer_affine_places_moving_pixels_on_fixed_world():
    reg = _known_registration(False)
    moving_px = np.array([[30.0, 50.0], [120.0, 10.0]])
    fixed_px = reg.map_points(moving_px, "moving_to_fixed")
    a = reg.layer_affine(world_mpp=reg.fixed_mpp)
    world = moving_px @ a[:2, :2].T + a[:2, 2]
    assert np.allclose(world, fixed_px)
