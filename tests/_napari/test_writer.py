"""The writer contributions through napari's own save path (``LayerList.save`` -> npe2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import zarr
from napari.components import ViewerModel
from napari.utils.colormaps import DirectLabelColormap

from napari_virtualstain.core.geojson import read_geojson
from napari_virtualstain.core.io import open_slide
from napari_virtualstain.core.io.ngff_labels import read_label_properties
from tests.conftest import tissue_like_rgb

PLUGIN = "napari-virtualstain"


@pytest.fixture(autouse=True)
def plugins_discovered():
    """What napari.Viewer does at start-up (a bare ViewerModel does not)."""
    from npe2 import PluginManager

    PluginManager.instance().discover()


def nuclei_viewer() -> ViewerModel:
    labels = np.zeros((300, 400), np.uint32)
    labels[10:20, 10:20] = 1
    labels[100:130, 200:240] = 2
    labels[250:260, 5:9] = 7
    features = pd.DataFrame(
        {
            "index": [1, 2, 7],
            "area_um2": [25.0, 300.0, 10.0],
            "dab_od_mean": [0.41, 0.05, np.nan],
            "positive": [True, False, False],
            "class": ["Positive", "Negative", "Negative"],
        }
    )
    colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (1, 0, 0, 1), 2: (0, 0, 1, 1)}
    viewer = ViewerModel()
    viewer.add_labels(
        labels,
        name="nuclei",
        scale=(0.5, 0.5),
        units=("micrometer", "micrometer"),
        features=features,
        colormap=DirectLabelColormap(color_dict=colors),
    )
    return viewer


def test_file_save_labels_writes_ngff_labels_with_properties(tmp_path):
    viewer = nuclei_viewer()
    out = tmp_path / "nuclei.zarr"
    written = viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert written == [str(out / "labels" / "nuclei")]
    assert zarr.open_group(str(out / "labels"), mode="r").attrs["labels"] == ["nuclei"]
    group = zarr.open_group(str(out / "labels" / "nuclei"), mode="r")
    attrs = dict(group.attrs)
    ms = attrs["multiscales"][0]
    assert [a["unit"] for a in ms["axes"]] == ["micrometer", "micrometer"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5, 0.5]
    np.testing.assert_array_equal(group["0"][:], viewer.layers["nuclei"].data)
    props = {p["label-value"]: p for p in read_label_properties(out, "nuclei")}
    assert sorted(props) == [1, 2, 7]
    assert props[1]["positive"] is True and props[1]["dab_od_mean"] == pytest.approx(0.41)
    assert props[2]["area_um2"] == 300.0 and props[2]["class"] == "Negative"
    assert props[7]["dab_od_mean"] is None  # NaN is not JSON
    colors = {c["label-value"]: c["rgba"] for c in attrs["image-label"]["colors"]}
    assert colors[1] == [255, 0, 0, 255] and colors[2] == [0, 0, 255, 255]


def test_image_then_labels_share_one_store_and_resave_replaces(tmp_path):
    viewer = nuclei_viewer()
    rgb = tissue_like_rgb(300, 400)
    viewer.add_image(rgb, name="he", rgb=True, scale=(0.5, 0.5), units=("micrometer",) * 2)
    out = tmp_path / "case.ome.zarr"
    viewer.layers.selection = {viewer.layers["he"]}
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    viewer.layers.selection = {viewer.layers["nuclei"]}
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    slide = open_slide(out)  # still an image, at the layer's pixel size
    assert slide.mpp == pytest.approx(0.5)
    np.testing.assert_array_equal(slide.levels[0].compute(), rgb)
    # Edit and save again: the label image is replaced, the image untouched.
    viewer.layers["nuclei"].data = np.where(viewer.layers["nuclei"].data == 7, 0, 1).astype(
        np.uint32
    )
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert int(zarr.open_group(str(out / "labels" / "nuclei"), mode="r")["0"][:].max()) == 1
    assert [p.name for p in (out / "labels").iterdir() if p.name.startswith(".n")] == []
    np.testing.assert_array_equal(open_slide(out).levels[0].compute(), rgb)


def test_image_and_labels_selected_together_go_into_one_store(tmp_path):
    viewer = nuclei_viewer()
    rgb = tissue_like_rgb(300, 400)
    viewer.add_image(rgb, name="he", rgb=True, scale=(0.5, 0.5), units=("micrometer",) * 2)
    out = tmp_path / "case.zarr"
    written = viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert written == [str(out), str(out / "labels" / "nuclei")]
    np.testing.assert_array_equal(open_slide(out).levels[0].compute(), rgb)
    assert len(read_label_properties(out, "nuclei")) == 3


def test_saved_image_and_labels_open_again_with_their_features(tmp_path):
    """File -> Save, then File -> Open: the nuclei come back with their table and colours."""
    viewer = nuclei_viewer()
    viewer.add_image(tissue_like_rgb(300, 400), name="he", rgb=True, scale=(0.5, 0.5),
                     units=("micrometer",) * 2)  # fmt: skip
    out = tmp_path / "case.zarr"
    viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    again = ViewerModel()
    image, labels = again.open(str(out), plugin=PLUGIN)
    assert image.rgb and labels.name == "nuclei"
    np.testing.assert_array_equal(np.asarray(labels.data), viewer.layers["nuclei"].data)
    assert tuple(labels.scale) == (0.5, 0.5) and str(labels.units[-1]) == "micrometer"
    table = labels.features.set_index("index")
    assert table.loc[1, "dab_od_mean"] == pytest.approx(0.41) and bool(table.loc[1, "positive"])
    assert table.loc[2, "class"] == "Negative" and table.loc[7, "area_um2"] == 10.0
    np.testing.assert_allclose(labels.get_color(1), [1, 0, 0, 1])
    assert table["area_um2"].dtype.kind == "f" and np.isnan(table.loc[0, "area_um2"])


def test_labels_inside_an_image_follow_its_levels(tmp_path):
    """NGFF: a label image has as many levels as its image, on the same grid."""
    rgb = tissue_like_rgb(1101, 901)  # odd sides: the image's levels trim the odd edge
    labels = np.zeros((1101, 901), np.uint16)
    labels[500:540, 300:360] = 5
    viewer = ViewerModel()
    viewer.add_image(rgb, name="he", rgb=True, scale=(0.5, 0.5), units=("micrometer",) * 2)
    viewer.add_labels(labels, name="cells", scale=(0.5, 0.5), units=("micrometer",) * 2)
    out = tmp_path / "big.zarr"
    viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    root = zarr.open_group(str(out), mode="r")
    lab = zarr.open_group(str(out / "labels" / "cells"), mode="r")
    image_ds = root.attrs["multiscales"][0]["datasets"]
    label_ds = lab.attrs["multiscales"][0]["datasets"]
    assert len(label_ds) == len(image_ds) == 3
    for i, l in zip(image_ds, label_ds, strict=True):
        assert lab[l["path"]].shape == root[i["path"]].shape[-2:]
        assert (
            l["coordinateTransformations"][0]["scale"]
            == i["coordinateTransformations"][0]["scale"][-2:]
        )
    coarse = lab["2"][:]
    assert set(np.unique(coarse)) == {0, 5} and (coarse == 5).sum() == 10 * 15
    # Labels larger than the image are refused, naming both sizes.
    viewer.layers["cells"].data = np.zeros((1200, 100), np.uint16)
    viewer.layers.selection = {viewer.layers["cells"]}
    with pytest.raises(
        OSError, match=r"1200 x 100 px at \(y=0, x=0\) do not fit in the image there \(1101 x 901"
    ):
        viewer.layers.save(str(out), selected=True, plugin=PLUGIN)


def test_labels_of_a_roi_box_keep_their_place(tmp_path):
    """Ki-67 labels cover their ROIs' box, placed with a translate: the place is kept."""
    rgb = tissue_like_rgb(600, 800)
    box = np.zeros((100, 120), np.uint32)
    box[10:30, 40:70] = 3
    viewer = ViewerModel()
    viewer.add_image(rgb, name="he", rgb=True, scale=(0.5, 0.5), units=("micrometer",) * 2)
    viewer.add_labels(box, name="roi nuclei", scale=(0.5, 0.5), translate=(200 * 0.5, 300 * 0.5),
                      units=("micrometer",) * 2)  # fmt: skip
    alone = tmp_path / "alone.zarr"  # a store of its own: an NGFF translation
    viewer.layers.selection = {viewer.layers["roi nuclei"]}
    viewer.layers.save(str(alone), selected=True, plugin=PLUGIN)
    (back,) = ViewerModel().open(str(alone), plugin=PLUGIN)  # labels only: still opens
    assert tuple(back.translate) == (100.0, 150.0) and back.data.shape == (100, 120)
    np.testing.assert_array_equal(np.asarray(back.data), box)
    inside = tmp_path / "case.zarr"  # inside the image: pasted on a full-size label image
    viewer.layers.save(str(inside), selected=False, plugin=PLUGIN)
    full = zarr.open_group(str(inside / "labels" / "roi nuclei"), mode="r")["0"][:]
    assert full.shape == (600, 800)
    np.testing.assert_array_equal(full[200:300, 300:420], box)
    assert int(full.sum()) == int(box.sum())
    viewer.layers["roi nuclei"].translate = (550 * 0.5, 300 * 0.5)  # now hangs off the image
    viewer.layers.selection = {viewer.layers["roi nuclei"]}
    with pytest.raises(OSError, match=r"at \(y=550, x=300\) do not fit"):
        viewer.layers.save(str(inside), selected=True, plugin=PLUGIN)


def test_labels_refuse_to_write_over_a_file(tmp_path):
    viewer = nuclei_viewer()
    target = tmp_path / "precious.zarr"
    target.write_text("not a store")
    with pytest.raises(Exception, match="not a zarr group"):
        viewer.layers.save(str(target), selected=False, plugin=PLUGIN)
    assert target.read_text() == "not a store"


def test_file_save_shapes_writes_qupath_geojson(tmp_path):
    viewer = ViewerModel()
    viewer.add_shapes(
        [
            np.array([[10, 20], [10, 60], [40, 60], [40, 20]]),  # rectangle 30 x 40 px
            np.array([[100, 100], [100, 140], [120, 140], [120, 100]]),  # ellipse box 20 x 40
            np.array([[200, 10], [260, 10], [230, 90]]),
            np.array([[0, 0], [50, 50]]),  # a line: no area, not an ROI
        ],
        shape_type=["rectangle", "ellipse", "polygon", "line"],
        features={"name": ["tumour", "hot spot", "edge", "ruler"]},
        scale=(0.25, 0.25),
        units=("micrometer", "micrometer"),
    )
    out = tmp_path / "rois.geojson"
    with pytest.warns(UserWarning, match="1 shape"):
        viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    raw = json.loads(out.read_text())
    assert [f["properties"]["objectType"] for f in raw["features"]] == ["annotation"] * 3
    # Level-0 pixel coordinates [x, y]: napari's pixel centre 10 is QuPath's [10, 11) -> edge 10.5.
    xs = [p[0] for p in raw["features"][0]["geometry"]["coordinates"][0]]
    ys = [p[1] for p in raw["features"][0]["geometry"]["coordinates"][0]]
    assert (min(xs), max(xs), min(ys), max(ys)) == (20.5, 60.5, 10.5, 40.5)
    rois = read_geojson(out, 0.25).rois
    assert [r.name for r in rois] == ["tumour", "hot spot", "edge"]
    assert rois[0].area_um2 == pytest.approx(30 * 40 * 0.25**2)
    assert rois[1].area_um2 == pytest.approx(np.pi * 10 * 20 * 0.25**2, rel=0.01)
    assert rois[2].area_um2 == pytest.approx(0.5 * 60 * 80 * 0.25**2)


def test_shapes_with_a_translate_are_written_in_image_pixels(tmp_path):
    viewer = ViewerModel()
    square = np.array([[0, 0], [0, 10], [10, 10], [10, 0]])
    viewer.add_shapes([square], shape_type="rectangle", scale=(0.5, 0.5), translate=(50.0, 25.0))
    out = tmp_path / "moved.geojson"
    viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    ring = json.loads(out.read_text())["features"][0]["geometry"]["coordinates"][0]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    assert (min(xs), min(ys)) == (50.5, 100.5)  # translate / scale = (100, 50) px, + 0.5


def test_writers_are_in_the_manifest_for_their_extensions():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    got = {
        (w.command, tuple(w.layer_types))
        for w in pm.iter_compatible_writers(["labels"])
        if w.command.startswith(PLUGIN)
    }
    assert got == {(f"{PLUGIN}.write_labels", ("labels",))}
    shapes = [w for w in pm.iter_compatible_writers(["shapes"]) if w.command.startswith(PLUGIN)]
    assert [w.filename_extensions for w in shapes] == [[".geojson", ".json"]]
