"""Per-nucleus measurements, classes, ratios, grade, hot spot; synthetic truth and the real sample."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from napari_virtualstain.core.deconvolution import QUPATH_HE
from napari_virtualstain.core.ki67 import (
    Ki67Config,
    Nuclei,
    classify,
    find_hotspot,
    measure_nuclei,
    ratio_bin,
    summarise,
    who_grade,
    write_nuclei_csv,
    write_results_csv,
)
from napari_virtualstain.core.ki67.pipeline import (
    measure_rois,
    ratio_from_virtual_he,
    ratio_virtual_vs_real,
)
from napari_virtualstain.core.roi import ROI
from tests.support.ki67_synthetic import GLASS_RGB, grid_of_nuclei, render


def _nuclei(dab, area=None, y=None, x=None, config=None):
    config = config or Ki67Config()
    dab = np.asarray(dab, float)
    n = len(dab)
    area = np.full(n, 40.0) if area is None else np.asarray(area, float)
    return Nuclei(
        label=np.arange(1, n + 1, dtype=np.uint32),
        y=np.zeros(n) if y is None else np.asarray(y, float),
        x=np.zeros(n) if x is None else np.asarray(x, float),
        area_um2=area,
        dab_od_mean=dab,
        dab_od_max=dab,
        dab_od_median=dab,
        hematoxylin_od_mean=np.full(n, 0.3),
        intensity_class=classify(dab, config.hscore_thresholds),
        positive=classify(dab, config.thresholds) >= 1,
        flipped=np.zeros(n, bool),
    )


def test_classes_ratios_and_hscore_by_hand():
    # 0.1 -> neg, 0.3 -> 1+, 0.5 -> 2+, 0.7 -> 3+ (QuPath's 0.2 / 0.4 / 0.6).
    nuclei = _nuclei([0.1, 0.1, 0.3, 0.5, 0.7], area=[10, 10, 20, 30, 40])
    r = summarise(nuclei, "roi")
    assert (r.n_nuclei, r.n_positive, r.n_negative) == (5, 3, 2)
    assert (r.n_1plus, r.n_2plus, r.n_3plus) == (1, 1, 1)
    assert r.labelling_index == pytest.approx(0.6)
    assert r.area_ratio == pytest.approx(90 / 110)
    assert r.h_score == pytest.approx(100 * (1 + 2 + 3) / 5)
    # Five nuclei: the figures are given, but never a bin or grade beside "too few".
    assert r.bin is None and r.who_grade is None and not r.graded
    assert r.no_grade_reason == "too few nuclei for grading (5 < 500)"
    assert any("too few nuclei for grading" in w for w in r.warnings)
    graded = summarise(nuclei, "roi", Ki67Config(min_nuclei_for_grade=5))
    assert graded.bin == "0.5-1" and graded.who_grade == "G3" and graded.no_grade_reason == ""
    three = Ki67Config(thresholds=(0.4, 0.5, 0.6))
    assert summarise(_nuclei([0.1, 0.3, 0.45, 0.7], config=three), "t", three).n_positive == 2
    assert three.class_names == ("Negative", "1+", "2+", "3+")


def test_bins_grades_and_config_validation():
    assert [ratio_bin(v) for v in (0.0, 0.19, 0.2, 0.49, 0.5, 1.0)] == [
        "0-0.2", "0-0.2", "0.2-0.5", "0.2-0.5", "0.5-1", "0.5-1"
    ]  # fmt: skip
    assert [who_grade(v) for v in (0.0, 0.029, 0.03, 0.2, 0.2001)] == ["G1", "G1", "G2", "G2", "G3"]
    with pytest.raises(ValueError):
        ratio_bin(1.5)
    with pytest.raises(ValueError, match="one or three"):
        Ki67Config(thresholds=(0.2, 0.4))
    with pytest.raises(ValueError, match="increasing"):
        Ki67Config(thresholds=(0.6, 0.4, 0.2))


def test_enough_nuclei_means_no_grading_warning():
    r = summarise(_nuclei(np.r_[np.full(480, 0.05), np.full(20, 0.5)]), "big")
    assert r.warnings == () and r.who_grade == "G2" and r.labelling_index == pytest.approx(0.04)


def test_no_nuclei_gives_zeros_and_says_so_never_nan():
    r = summarise(Nuclei.empty(), "empty")
    assert (r.n_nuclei, r.labelling_index, r.area_ratio, r.h_score) == (0, 0.0, 0.0, 0.0)
    assert r.bin is None and r.who_grade is None and "no nuclei" in r.warnings[0]
    json.dumps(r.to_dict(), allow_nan=False)
    blank = np.full((200, 200, 3), 240, np.uint8)
    res = measure_rois(blank, 0.5, [ROI.rectangle("glass", 10, 10, 50, 50)]).results[0]
    assert res.n_nuclei == 0 and "no tissue" in res.warnings[0]


def test_per_nucleus_measurements_on_rendered_discs():
    syn = grid_of_nuclei(n_rows=4, n_cols=4, jitter_radius=0.0)
    labels = syn.truth.astype(np.uint32)
    nuc = measure_nuclei(labels, syn.rgb, 0.5, background_rgb=GLASS_RGB)
    assert len(nuc) == 16
    np.testing.assert_allclose(nuc.dab_od_mean[syn.positive], 0.7, atol=0.05)
    np.testing.assert_allclose(nuc.dab_od_mean[~syn.positive], 0.02, atol=0.03)
    np.testing.assert_allclose(nuc.hematoxylin_od_mean[~syn.positive], 0.55, atol=0.05)
    np.testing.assert_allclose(nuc.dab_od_median[syn.positive], 0.7, atol=0.05)
    assert (nuc.dab_od_max >= nuc.dab_od_median).all()
    np.testing.assert_allclose(nuc.area_um2, np.pi * 4.0**2, rtol=0.05)
    np.testing.assert_allclose(np.stack([nuc.y, nuc.x], 1), syn.centres_px, atol=0.1)
    assert (nuc.positive == syn.positive).all()


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_measured_ratio_matches_rendered_truth(mpp):
    syn = grid_of_nuclei(n_rows=10, n_cols=10, mpp=mpp, positive_fraction=0.35, seed=3)
    run = measure_rois(syn.rgb, mpp)
    r = run.results[0]
    assert r.n_nuclei == 100
    assert r.labelling_index == pytest.approx(syn.labelling_index, abs=0.02)
    assert r.area_ratio == pytest.approx(syn.area_ratio, abs=0.02)


def test_rois_count_only_nuclei_whose_centre_is_inside():
    syn = grid_of_nuclei(n_rows=8, n_cols=8)  # 16 µm spacing, centres at 8 + 16 k µm
    rois = [ROI.rectangle("left half", 0, 0, 128, 64), ROI.ellipse("middle", 64, 64, 20, 20)]
    run = measure_rois(syn.rgb, 0.5, rois)
    left, middle = run.results
    assert left.n_nuclei == 32
    assert left.n_positive == int(syn.positive.reshape(8, 8)[:, :4].sum())
    assert middle.n_nuclei == 4  # the four centres at 56 / 72 µm lie 11.3 µm from (64, 64)
    labels, origin = run.labels_union()
    assert labels.dtype == np.uint32 and origin == (0, 0)
    present = set(np.unique(labels).tolist()) - {0}
    # Overlapping ROIs measure a shared nucleus in each; the joint image shows the first's label.
    assert set(left.n_nuclei and run.measurements[0].nuclei.label.tolist()) <= present
    every = {int(v) for m in run.measurements for v in m.nuclei.label}
    assert present <= every and len(every) == 36


def test_flipping_a_nucleus_updates_the_counts():
    syn = grid_of_nuclei(n_rows=4, n_cols=4)
    m = measure_rois(syn.rgb, 0.5).measurements[0]
    neg = int(m.nuclei.label[~m.nuclei.positive][0])
    flipped = m.flip(neg)
    assert flipped.result.n_positive == m.result.n_positive + 1
    assert flipped.result.n_flipped == 1
    back = flipped.flip(neg)
    assert back.result.n_positive == m.result.n_positive and back.result.n_flipped == 0
    with pytest.raises(KeyError):
        m.flip(10_000)


def test_hotspot_finds_the_planted_positive_cluster():
    rng = np.random.default_rng(0)
    y, x = rng.uniform(0, 2000, (2, 3000))
    positive = rng.uniform(size=3000) < 0.05
    hot = (np.abs(y - 1500) < 150) & (np.abs(x - 500) < 150)
    positive[hot] = rng.uniform(size=hot.sum()) < 0.8
    nuclei = _nuclei(np.where(positive, 0.5, 0.05), y=y, x=x)
    spot = find_hotspot(nuclei, size_um=100.0, mpp=0.5, min_nuclei=20)
    cy, cx = (spot.y_um + 50) / 0.5, (spot.x_um + 50) / 0.5
    assert abs(cy - 1500) < 100 and abs(cx - 500) < 100
    assert spot.labelling_index > 0.6
    assert spot.to_roi().area_um2 == pytest.approx(100.0**2)
    # Restricted to a mask away from the cluster, the hot spot cannot be there.
    mask = np.zeros((2000, 2000), bool)
    mask[:, 1000:] = True
    away = find_hotspot(nuclei, 100.0, 0.5, region_mask=mask)
    assert away.x_um / 0.5 >= 1000 - 1 and away.labelling_index < 0.4


def test_seed_003_route_segments_virtual_he_and_reads_original_dab():
    syn = grid_of_nuclei(n_rows=6, n_cols=6, positive_fraction=0.4, seed=5)
    # The "virtual H&E": the same nuclei in hematoxylin, on eosin-tinted glass, no DAB at all.
    he = render(
        syn.centres_px, syn.radii_px, np.zeros(36, bool), syn.rgb.shape[:2], 0.5,
        stains=QUPATH_HE, hema_od=0.5, seed=9,
    )  # fmt: skip
    run = ratio_from_virtual_he(syn.rgb, 0.5, virtual_he=he.rgb)
    r = run.results[0]
    assert r.n_nuclei == 36 and r.labelling_index == pytest.approx(syn.labelling_index)
    assert run.provenance["dab_measured_on_other_image"] is True
    with pytest.raises(ValueError, match="same size"):
        ratio_from_virtual_he(syn.rgb, 0.5, virtual_he=he.rgb[:-5])
    with pytest.raises(ValueError, match="model"):
        ratio_from_virtual_he(syn.rgb, 0.5)


def test_virtual_vs_real_compares_the_same_rois():
    real = grid_of_nuclei(n_rows=6, n_cols=6, positive_fraction=0.3, seed=1)
    virtual = grid_of_nuclei(n_rows=6, n_cols=6, positive_fraction=0.5, seed=2)
    rois = [ROI.rectangle("all", 0, 0, 96, 96)]
    vr = ratio_virtual_vs_real(real.rgb, 0.5, rois, virtual_ki67=virtual.rgb)
    (row,) = vr.comparison()
    assert row["labelling_index_real"] == pytest.approx(real.labelling_index)
    assert row["labelling_index_virtual"] == pytest.approx(virtual.labelling_index)
    assert row["delta_labelling_index"] == pytest.approx(0.5 - 0.3, abs=0.03)
    with pytest.raises(ValueError, match="he_rgb"):
        ratio_virtual_vs_real(real.rgb, 0.5, rois)


def test_csv_outputs(tmp_path):
    nuclei = _nuclei([0.1, 0.5])
    path = write_nuclei_csv(tmp_path / "n.csv", [("a", nuclei), ("b", nuclei)])
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert list(rows[0])[:6] == ["label", "y", "x", "area_um2", "dab_od_mean", "positive"]
    assert [r["roi"] for r in rows] == ["a", "a", "b", "b"] and rows[1]["positive"] == "1"
    res = write_results_csv(tmp_path / "r.csv", [summarise(nuclei, "a")])
    (row,) = csv.DictReader(io.StringIO(res.read_text()))
    assert row["name"] == "a" and float(row["labelling_index"]) == 0.5


@pytest.mark.slow
def test_real_ki67_sample_is_plausible_and_stable(shared_data):
    import tifffile
    from PIL import Image

    # A 1536 px (350 µm) square of the real sample keeps the three runs within the time budget.
    rgb = tifffile.imread(shared_data / "ki67" / "OS-2-ndpi_Ki67.ome.tif")[:1536, :1536]
    base = measure_rois(rgb, 0.227).results[0]
    # A proliferative carcinoma crop: hundreds of nuclei, a fifth to a third of them Ki-67+.
    assert base.n_nuclei > 300
    assert 0.1 < base.labelling_index < 0.4 and 0.15 < base.area_ratio < 0.6
    rotated = measure_rois(np.ascontiguousarray(np.rot90(rgb)), 0.227).results[0]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=75)
    jpeg = measure_rois(np.asarray(Image.open(buf)), 0.227).results[0]
    for other in (rotated, jpeg):
        assert other.labelling_index == pytest.approx(base.labelling_index, abs=0.02)
        assert other.area_ratio == pytest.approx(base.area_ratio, abs=0.02)


def test_large_rois_are_measured_block_by_block_without_a_label_image(monkeypatch):
    import dask.array as da

    from napari_virtualstain.core.ki67 import pipeline as ki67_pipeline

    syn = grid_of_nuclei(n_rows=8, n_cols=8, positive_fraction=0.4, seed=11)
    whole = measure_rois(syn.rgb, 0.5).results[0]
    # Pretend the ROI is too large for a label image; read the image lazily, in 48 px blocks.
    monkeypatch.setattr(ki67_pipeline, "MAX_LABEL_PIXELS", 100)
    lazy = da.from_array(syn.rgb, chunks=(64, 64, 3))
    run = measure_rois(lazy, 0.5, block_px=48)
    m = run.measurements[0]
    assert m.labels is None
    assert (m.result.n_nuclei, m.result.n_positive) == (whole.n_nuclei, whole.n_positive) == (
        64, int(syn.positive.sum())
    )  # fmt: skip
    assert m.result.area_ratio == pytest.approx(whole.area_ratio, abs=0.01)
    assert sorted(m.nuclei.label.tolist()) == list(range(1, 65))
    with pytest.raises(ValueError, match="too large"):
        run.labels_union()


def test_slide_input_uses_its_pyramid_for_estimates():
    import dask.array as da

    from napari_virtualstain.core.geometry import Box
    from napari_virtualstain.core.io import Slide
    from napari_virtualstain.core.ki67.pipeline import _small_view

    syn = grid_of_nuclei(n_rows=8, n_cols=8, positive_fraction=0.4, seed=12)
    levels = [da.from_array(syn.rgb, chunks=(64, 64, 3)), da.from_array(syn.rgb[::2, ::2])]
    slide = Slide(path=None, name="syn", levels=levels, mpp=0.5)
    view, down = _small_view(slide, Box(0, 0, 256, 256), 128)
    assert view.shape[:2] == (128, 128) and down == 2.0  # the level, not strided level 0
    from_slide = measure_rois(slide, 0.5).results[0]
    from_array = measure_rois(syn.rgb, 0.5).results[0]
    assert from_slide.n_nuclei == from_array.n_nuclei == 64
    assert from_slide.labelling_index == pytest.approx(from_array.labelling_index)


def test_faint_nuclei_are_counted_negative_and_reported():
    nuclei = _nuclei([0.02, 0.03, 0.5, 0.05])
    faint_h = nuclei.hematoxylin_od_mean.copy()
    faint_h[:2] = 0.04  # H + DAB OD 0.06 and 0.07: below 0.1
    from dataclasses import replace

    r = summarise(replace(nuclei, hematoxylin_od_mean=faint_h), "roi")
    assert r.n_faint == 2 and r.n_positive == 1 and r.n_negative == 3
    assert any("2 nuclei too faint to classify" in w for w in r.warnings)
    assert summarise(nuclei, "roi").n_faint == 0


def test_half_computed_rgba_virtual_stain_is_refused():
    syn = grid_of_nuclei()
    rgba = np.concatenate([syn.rgb, np.full(syn.rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    full = measure_rois(rgba, 0.5).results[0]
    assert full.n_nuclei == 64  # a fully computed RGBA layer is measured as its RGB
    rgba[:, 128:] = 0  # the right half not computed yet: transparent black
    with pytest.raises(ValueError, match="not computed"):
        measure_rois(rgba, 0.5)
    left = measure_rois(rgba, 0.5, [ROI.rectangle("left", 0, 0, 128, 60)]).results[0]
    assert left.n_nuclei > 0
