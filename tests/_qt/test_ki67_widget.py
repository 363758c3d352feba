"""The Ki-67 dock widget in a shown viewer: compute, labels overlay pixels, flip, cancel, export."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.geojson import read_geojson  # noqa: E402
from tests.support.docks import plugin_dock
from tests.support.ki67_synthetic import grid_of_nuclei, render  # noqa: E402


def _run(qtbot, widget):
    worker = widget.compute()
    assert worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    return worker


@pytest.fixture
def scene(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    syn = grid_of_nuclei(n_rows=8, n_cols=8, positive_fraction=0.5, seed=7)
    viewer.add_image(syn.rgb, rgb=True, name="ki67", scale=(0.5, 0.5), metadata={"mpp": 0.5})
    widget = plugin_dock(viewer, "Ki-67")
    return viewer, widget, syn


@pytest.mark.slow
def test_compute_adds_coloured_labels_and_table(qtbot, scene, tmp_path):
    viewer, widget, syn = scene
    assert widget.image_combo.currentText() == "ki67" and widget.mpp_spin.value() == 0.5
    widget.points_check.setChecked(True)
    _run(qtbot, widget)
    assert widget.status.text().startswith("Done"), widget.status.text()
    labels = viewer.layers["Nuclei (ki67)"]
    assert labels.data.max() == 64 and tuple(labels.scale) == (0.5, 0.5)
    assert len(viewer.layers["Centroids (ki67)"].data) == 64
    (row,) = widget.table_rows()
    assert (row["Image"], row["ROI"], row["Nuclei"]) == ("ki67", "whole image", "64")
    assert row["Positive"] == str(int(syn.positive.sum()))
    # 64 nuclei: too few for grading, so no bin and no grade, the reason beside them.
    assert (row["Bin"], row["WHO"]) == ("", "")
    assert row["Note"] == "too few nuclei for grading (64 < 500)"
    # Feature tables on the nuclei and the centroids: one row per nucleus (+ background).
    feats = labels.features
    assert list(feats.columns)[:7] == [
        "index", "label", "roi", "area_um2", "dab_od_mean", "class", "flipped"
    ]  # fmt: skip
    assert len(feats) == 65 and (feats["label"].to_numpy()[1:] == np.arange(1, 65)).all()
    assert int((feats["class"] == "Positive").sum()) == int(syn.positive.sum())
    points = viewer.layers["Centroids (ki67)"]
    assert len(points.features) == 64 and points.metadata["mpp"] == 0.5
    points.features.to_csv(tmp_path / "points.csv")
    assert len((tmp_path / "points.csv").read_text().splitlines()) == 65
    assert labels.metadata["mpp"] == 0.5 and labels.units == viewer.layers["ki67"].units
    # The histogram holds the same nuclei, split at the threshold.
    (hist,) = widget.histogram.histograms
    assert hist.counts.sum() == 64 and hist.thresholds_od == (0.2,)
    assert hist.counts[hist.edges_od[:-1] >= 0.2].sum() == int(syn.positive.sum())
    # Real pixels: the overlay shows red (positive) and blue (negative) nuclei.
    viewer.layers["Centroids (ki67)"].visible = False
    viewer.reset_view()
    shot = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)
    reddish = (shot[..., 0] > shot[..., 1] + 60) & (shot[..., 0] > shot[..., 2] + 60)
    bluish = (shot[..., 2] > shot[..., 0] + 60) & (shot[..., 2] > shot[..., 1] + 20)
    assert reddish.sum() > 200 and bluish.sum() > 200
    labels.visible = False
    plain = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)
    plain_red = (plain[..., 0] > plain[..., 1] + 60) & (plain[..., 0] > plain[..., 2] + 60)
    assert plain_red.sum() < reddish.sum() / 4
    # Exports.
    geo = widget.export_geojson(tmp_path / "k.geojson")
    assert len(read_geojson(geo, 0.5).detections) == 64
    widget.export_csv(tmp_path / "n.csv", tmp_path / "r.csv")
    assert len((tmp_path / "n.csv").read_text().splitlines()) == 65


def test_double_click_flip_updates_counts(qtbot, scene):
    viewer, widget, syn = scene
    _run(qtbot, widget)
    labels = viewer.layers["Nuclei (ki67)"]
    run = widget.runs["ki67"]
    nuclei = run.measurements[0].nuclei
    i = int(np.flatnonzero(~nuclei.positive)[0])
    world = (nuclei.y[i] * 0.5, nuclei.x[i] * 0.5)
    before = int(widget.table_rows()[0]["Positive"])
    # A double-click event through napari's own callback dispatch, as the canvas sends it.
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import mouse_double_click_callbacks

    event = read_only_mouse_event(type="mouse_double_click", button=1, position=world)
    mouse_double_click_callbacks(labels, event)
    assert int(widget.table_rows()[0]["Positive"]) == before + 1
    feats = labels.features.set_index("label")
    assert (
        feats.loc[int(nuclei.label[i]), "flipped"]
        and feats.loc[int(nuclei.label[i]), "class"] == "Positive"
    )
    color = labels.colormap.map(np.array([nuclei.label[i]]))[0]
    assert color[0] > 0.8 and color[2] < 0.3  # now drawn red
    assert widget.flip_at(labels, (0.0, 0.0)) is None  # background: nothing to flip
    assert widget.flip_at(labels, world) == int(nuclei.label[i])  # and back
    assert int(widget.table_rows()[0]["Positive"]) == before


def test_rois_from_shapes_and_virtual_beside_real_only_for_a_declared_pair(qtbot, scene):
    viewer, widget, syn = scene
    viewer.add_shapes(
        [np.array([[0, 0], [0, 64], [128, 64], [128, 0]])],  # µm (world): the left half
        shape_type="rectangle",
        name="rois",
        features={"name": ["left"]},
    )
    widget.shapes_combo.setCurrentText("rois")
    _run(qtbot, widget)
    virtual = grid_of_nuclei(n_rows=8, n_cols=8, positive_fraction=0.25, seed=8)
    # Named "virtual" but without provenance: not a virtual stain, no Δ.
    viewer.add_image(virtual.rgb, rgb=True, name="virtual ki67", scale=(0.5, 0.5))
    widget.image_combo.setCurrentText("virtual ki67")
    assert widget.mpp_spin.value() == 0.0  # no pixel size on that layer: asked for
    widget.mpp_spin.setValue(0.5)
    _run(qtbot, widget)
    rows = widget.table_rows()
    assert [(r["Image"], r["ROI"], r["Nuclei"]) for r in rows] == [
        ("ki67", "left", "32"), ("virtual ki67", "left", "32")
    ]  # fmt: skip
    assert [r["Δ vs real"] for r in rows] == ["", ""]
    assert [r["Stain"] for r in rows] == ["real", "real"]  # a name is not provenance
    # Declared by provenance: a virtual stain registered to the real Ki-67.
    viewer.layers["virtual ki67"].metadata.update(
        {"virtualstain": {"model": {"name": "demo"}}, "registered_to": "ki67"}
    )
    widget._fill_table()
    rows = widget.table_rows()
    assert [r["Stain"] for r in rows] == ["real", "virtual"]  # told apart in the table
    real_li, virtual_li = float(rows[0]["Index %"]), float(rows[1]["Index %"])
    assert float(rows[1]["Δ vs real"]) == pytest.approx(virtual_li - real_li, abs=0.11)
    # A registered pair placed 16 µm apart in the world: the same world ROI is a different
    # region of each slide's own µm; Δ follows the world region.
    shifted = viewer.add_image(
        virtual.rgb, rgb=True, name="registered", scale=(0.5, 0.5), translate=(16.0, 0.0),
        metadata={"mpp": 0.5, "virtualstain": {"model": {"name": "demo"}}, "registered_to": "ki67"},
    )  # fmt: skip
    widget.image_combo.setCurrentText(shifted.name)
    _run(qtbot, widget)
    by_image = {r["Image"]: r for r in widget.table_rows()}
    assert by_image["registered"]["Δ vs real"] != ""
    assert widget.runs["registered"].measurements[0].roi.params[0][0] == pytest.approx(-16, abs=0.5)
    viewer.layers.remove("registered")
    widget.runs.pop("registered")
    widget.kept.pop(("registered", "rois"))  # results stay in the table until dropped
    # The same ROI name drawn elsewhere is not the same region: no Δ.
    shapes = viewer.layers["rois"]
    shapes.data = [np.array([[0, 64], [0, 128], [128, 128], [128, 64]])]
    _run(qtbot, widget)
    assert [r["Δ vs real"] for r in widget.table_rows()] == ["", ""]


def test_pixel_size_follows_the_measured_layer(qtbot, scene):
    viewer, widget, syn = scene
    fine = viewer.add_image(syn.rgb, rgb=True, name="fine", scale=(0.25, 0.25))
    fine.units = ("micrometer", "micrometer")
    viewer.add_image(syn.rgb, rgb=True, name="no size")
    widget.image_combo.setCurrentText("fine")
    assert widget.mpp_spin.value() == 0.25
    widget.image_combo.setCurrentText("no size")
    assert widget.mpp_spin.value() == 0.0 and "'no size'" in widget.status.text()
    assert widget.compute() is None and "pixel size" in widget.status.text()
    widget.mpp_spin.setValue(0.5)  # typed for that layer, used, and kept for it alone
    _run(qtbot, widget)
    assert widget.runs["no size"].mpp == 0.5
    widget.image_combo.setCurrentText("fine")
    assert widget.mpp_spin.value() == 0.25
    widget.image_combo.setCurrentText("no size")
    assert widget.mpp_spin.value() == 0.5
    widget.image_combo.setCurrentText("ki67")
    assert widget.mpp_spin.value() == 0.5
    # Our own overlays carry the pixel size they were measured at.
    _run(qtbot, widget)
    nuclei = viewer.layers["Nuclei (ki67)"]
    assert nuclei.metadata["mpp"] == 0.5
    widget.image_combo.setCurrentText("Nuclei (ki67)")  # not RGB: not offered
    assert widget.image_combo.currentText() == "ki67"


def test_he_layer_is_refused_naming_it_and_measure_anyway_marks_it(qtbot, make_napari_viewer):
    from napari_virtualstain.core.io import open_slide
    from tests.support import PACKAGE_DATA

    viewer = make_napari_viewer(show=True)
    he = np.asarray(open_slide(PACKAGE_DATA / "OS-1-detail_HE.ome.tif").levels[0])[:400, :400]
    viewer.add_image(he, rgb=True, name="OS-1 H&E", metadata={"mpp": 0.227})
    widget = plugin_dock(viewer, "Ki-67")
    widget.compute()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    text = widget.status.text()
    assert "'OS-1 H&E'" in text and "eosin" in text and "does not look like" in text, text
    assert widget.runs == {} and "Nuclei (OS-1 H&E)" not in viewer.layers
    widget.force_check.setChecked(True)
    _run(qtbot, widget)
    assert "STAIN NOT VERIFIED" in widget.status.text()
    (row,) = widget.table_rows()
    assert (row["Bin"], row["WHO"]) == ("", "") and row["Note"].startswith("stain not verified")


def test_segment_on_virtual_he_measures_dab_on_ki67(qtbot, scene):
    from napari_virtualstain.core.deconvolution import QUPATH_HE
    from napari_virtualstain.core.ki67.pipeline import measure_rois

    viewer, widget, syn = scene
    # The "virtual H&E": the same nuclei in hematoxylin on eosin-tinted glass, no DAB at all.
    he = render(
        syn.centres_px, syn.radii_px, np.zeros(len(syn.positive), bool), syn.rgb.shape[:2], 0.5,
        stains=QUPATH_HE, hema_od=0.5, seed=9,
    ).rgb  # fmt: skip
    viewer.add_image(he, rgb=True, name="virtual he", scale=(0.5, 0.5), metadata={"mpp": 0.5})
    widget.image_combo.setCurrentText("ki67")
    widget.mpp_spin.setValue(0.5)
    assert widget.segment_on_combo.currentText().startswith("—")
    widget.segment_on_combo.setCurrentText("virtual he")
    _run(qtbot, widget)
    assert widget.status.text().startswith("Done"), widget.status.text()
    expected = measure_rois(he, 0.5, measure_image=syn.rgb, segment_he=True)
    r = expected.results[0]
    (row,) = widget.table_rows()
    assert (row["Image"], row["ROI"]) == ("ki67", "whole image")
    assert (row["Nuclei"], row["Positive"]) == (str(r.n_nuclei), str(r.n_positive))
    assert r.n_nuclei == 64 and r.n_positive == int(syn.positive.sum())
    assert widget.runs["ki67"].provenance["dab_measured_on_other_image"] is True
    assert viewer.layers["Nuclei (ki67)"].data.max() == 64
    # Layers of different sizes are refused with a clear message, nothing started.
    viewer.add_image(he[:-5], rgb=True, name="cropped he")
    widget.segment_on_combo.setCurrentText("cropped he")
    assert widget.compute() is None
    assert "differ in size" in widget.status.text() and widget.worker is None


def test_cancel_adds_nothing(qtbot, make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    syn = grid_of_nuclei(n_rows=24, n_cols=24)
    viewer.add_image(syn.rgb, rgb=True, name="big", metadata={"mpp": 0.5})
    rects = [
        np.array([[k * 4, 0], [k * 4, 60], [k * 4 + 60, 60], [k * 4 + 60, 0]]) for k in range(40)
    ]
    viewer.add_shapes(rects, shape_type="rectangle", name="many rois")
    widget = plugin_dock(viewer, "Ki-67")
    widget.shapes_combo.setCurrentText("many rois")
    worker = widget.compute()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert worker.abort_requested
    assert widget.status.text().startswith("Cancelled")
    assert "Nuclei (big)" not in viewer.layers and widget.table_rows() == []


def test_bad_input_is_reported(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.full((32, 32, 3), 200, np.uint8), rgb=True, name="no mpp")
    widget = plugin_dock(viewer, "Ki-67")
    from napari_virtualstain.core.segmentation import BACKENDS

    combo = widget.segmenter_combo
    assert [combo.itemText(i) for i in range(combo.count())] == list(BACKENDS)
    assert combo.currentText() == "learned"  # the measured-better default, whatever the order
    assert widget.compute() is None and "pixel size" in widget.status.text()
    widget.mpp_spin.setValue(0.5)
    widget.threshold_edit.setText("0.2 0.4")
    assert widget.compute() is None and "three" in widget.status.text()


def test_geojson_rois_in_and_hot_spot(qtbot, scene, tmp_path):
    from napari_virtualstain.core.geojson import roi_features, write_geojson
    from napari_virtualstain.core.roi import ROI

    viewer, widget, syn = scene
    rois = [ROI.rectangle("top", 0, 0, 64, 128), ROI.ellipse("centre", 64, 64, 30, 30)]
    rois.append(ROI.rectangle("all", 0, 0, 128, 128))
    path = write_geojson(tmp_path / "qupath.geojson", roi_features(rois, 0.5))
    shapes = widget.import_rois(path)
    assert widget.shapes_combo.currentText() == shapes.name and len(shapes.data) == 3
    _run(qtbot, widget)
    counts = {r["ROI"]: int(r["Nuclei"]) for r in widget.table_rows()}
    assert counts == {"all": 64, "centre": 12, "top": 32}  # centres within 30 µm
    widget.hotspot_spin.setValue(80.0)
    spot = widget.find_hotspot()
    assert spot is not None and "Hot spot (ki67)" in viewer.layers
    # Brute force over the same 20 µm steps: no window inside "all" has a higher index.
    nuc = widget.runs["ki67"].measurements[2].nuclei
    y_um, x_um = (nuc.y + 0.5) * 0.5, (nuc.x + 0.5) * 0.5
    best = 0.0
    for wy in np.arange(0, 128 - 80 + 1, 20):
        for wx in np.arange(0, 128 - 80 + 1, 20):
            inside = (y_um >= wy) & (y_um < wy + 80) & (x_um >= wx) & (x_um < wx + 80)
            if inside.sum() >= 20:
                best = max(best, nuc.positive[inside].mean())
    assert spot.labelling_index == pytest.approx(best)


def test_key_columns_fit_the_default_dock_and_screenshot(qtbot, scene, tmp_path):
    from PIL import Image

    viewer, widget, syn = scene
    viewer.add_shapes(
        [np.array([[0, 0], [0, 128], [64, 128], [64, 0]]), np.array([[64, 0], [64, 128], [128, 128], [128, 0]])],
        shape_type="rectangle",
        name="rois",
        features={"name": ["upper half", "lower half"]},
    )  # fmt: skip
    widget.shapes_combo.setCurrentText("rois")
    widget.threshold_edit.setText("0.2 0.4 0.6")
    _run(qtbot, widget)
    qtbot.wait(200)
    assert widget.table.isVisible() and widget.table.width() < 500
    assert widget.table.key_columns_visible(), widget.table.width()
    hist = widget.histogram
    assert hist.roi_combo.count() == 2 and hist.current().thresholds_od == (0.2, 0.4, 0.6)
    assert len(hist.axes.lines) == 3  # the three thresholds drawn
    # The dock as a user sees it (docs/images/ki67_dock.png comes from docs/scripts).
    out = tmp_path / "ki67_dock.png"
    pixmap = widget.grab()
    assert pixmap.width() > 200 and pixmap.height() > 400
    pixmap.save(str(out))
    shot = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (shot[..., 0] > 180) & (shot[..., 1] < 90) & (shot[..., 2] < 90)
    blue = (shot[..., 2] > 180) & (shot[..., 0] < 90)
    assert red.sum() > 20 and blue.sum() > 20  # positive and negative bars drawn


def test_live_overlay_carries_its_pixel_size_and_is_refused_until_computed(
    qtbot, make_napari_viewer
):
    import torch

    from napari_virtualstain._napari.layers import slide_layer_data
    from napari_virtualstain._napari.virtual_layer import OverlayBuffers
    from napari_virtualstain._qt.virtual_overlay import VirtualOverlay
    from napari_virtualstain.core.engine.cache import MemoryLRU, TileCache
    from napari_virtualstain.core.engine.lazy import open_virtual_stain
    from napari_virtualstain.core.io import open_slide
    from napari_virtualstain.core.models import LoadedModel, ModelCard, build_generator
    from napari_virtualstain.core.samples import sample_path

    torch.manual_seed(0)
    card = ModelCard(name="tiny", arch="resnet_6blocks", arch_kwargs={"ngf": 4}, mpp=0.227,
                     tile_px=128, receptive_field_px=117)  # fmt: skip
    model = LoadedModel(build_generator("resnet_6blocks", ngf=4, init="xavier"), card, None)
    viewer = make_napari_viewer(show=True)
    slide = open_slide(sample_path("he"))
    data, kwargs, _ = slide_layer_data(slide)
    he = viewer.add_image(data, **kwargs)
    vs = open_virtual_stain(slide, model, device="cpu", precision="fp32",
                            cache=TileCache(MemoryLRU()))  # fmt: skip
    buffers = OverlayBuffers(vs)
    buffers.paint_background()
    overlay = VirtualOverlay(viewer, vs, he, buffers, budget_tiles=0)
    widget = plugin_dock(viewer, "Ki-67")
    widget.image_combo.setCurrentText(overlay.layer.name)
    expected = he.metadata["mpp"] * float(vs.downsamples[0])
    assert overlay.layer.metadata["mpp"] == pytest.approx(expected)
    assert widget.mpp_spin.value() == pytest.approx(expected, abs=1e-4)
    widget.compute()  # nothing computed yet: transparent, refused before any segmenting
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert "not computed" in widget.status.text() and widget.runs == {}
    overlay.close()


def test_a_renamed_roi_layer_stays_chosen_under_its_new_name(qtbot, scene):
    viewer, widget, syn = scene
    shapes = viewer.add_shapes(
        [np.array([[0, 0], [0, 64], [128, 64], [128, 0]])], shape_type="rectangle", name="tiny"
    )
    widget.shapes_combo.setCurrentText("tiny")
    shapes.name = "left half"
    assert widget.shapes_combo.currentText() == "left half"
    assert "tiny" not in [
        widget.shapes_combo.itemText(i) for i in range(widget.shapes_combo.count())
    ]
    _run(qtbot, widget)
    assert widget.status.text().startswith("Done"), widget.status.text()
    viewer.layers["ki67"].name = "ki67 slide"  # the measured image too
    assert widget.image_combo.currentText() == "ki67 slide"


def test_results_of_two_roi_layers_on_one_image_stay_side_by_side(qtbot, scene):
    viewer, widget, syn = scene
    for name, x0 in (("left", 0), ("right", 64)):
        viewer.add_shapes(
            [np.array([[0, x0], [0, x0 + 64], [128, x0 + 64], [128, x0]])],
            shape_type="rectangle", name=name,
        )  # fmt: skip
    widget.shapes_combo.setCurrentText("left")
    _run(qtbot, widget)
    widget.shapes_combo.setCurrentText("right")
    _run(qtbot, widget)
    rows = [(r["Image"], r["ROI"], r["Nuclei"]) for r in widget.table_rows()]
    # both kept (they used to replace each other silently); the same default name told apart
    assert rows == [("ki67", "ROI 1", "32"), ("ki67", "ROI 1 (right)", "32")]
    widget.shapes_combo.setCurrentText("left")  # measured again: its own rows are replaced
    _run(qtbot, widget)
    assert len(widget.table_rows()) == 2


def test_an_exclude_layer_leaves_its_nuclei_and_area_out(qtbot, scene):
    viewer, widget, syn = scene
    viewer.add_shapes(
        [np.array([[0, 0], [0, 64], [128, 64], [128, 0]])], shape_type="rectangle", name="left"
    )
    widget.shapes_combo.setCurrentText("left")
    _run(qtbot, widget)
    (before,) = widget.table_rows()
    necrosis = np.array([[0, 0], [0, 64], [64, 64], [64, 0]])  # the top half of the ROI
    viewer.add_shapes([necrosis], shape_type="rectangle", name="necrosis")
    widget.exclude_combo.setCurrentText("necrosis")
    _run(qtbot, widget)
    (after,) = widget.table_rows()
    assert int(after["Nuclei"]) < int(before["Nuclei"]) and int(after["Nuclei"]) > 0
    run = widget.runs["ki67"]
    assert run.results[0].roi_area_um2 == pytest.approx(64 * 64, rel=0.01)  # half of 128 x 64
