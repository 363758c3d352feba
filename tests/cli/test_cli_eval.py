"""``virtualstain eval``: each sub-command on small real inputs, checking printed and saved
numbers against the metrics computed directly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from skimage.io import imsave

from napari_virtualstain.cli import main
from napari_virtualstain.core.metrics import psnr, ssim
from tests.support import PACKAGE_DATA

DATA = PACKAGE_DATA


def _eval(*args) -> object:
    """``virtualstain eval ARGS`` (paths given as such), through click's test runner."""
    return CliRunner().invoke(main, ["eval", *map(str, args)])


def _eval_stain(gen: Path, ref: Path, *options) -> object:
    return _eval("stain", "--generated", gen, "--reference", ref, *options)


def _eval_against_truth(command: str, pred: Path, truth: Path, out: Path) -> object:
    return _eval(command, "--pred", pred, "--truth", truth, "--out", out)


def _png_ok(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) > 100
        arr = np.asarray(im.convert("L"))
    assert arr.std() > 5  # something was drawn


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles")
    he = tifffile.imread(DATA / "OS-1-detail_HE.ome.tif")
    gen, ref = root / "generated", root / "reference"
    gen.mkdir()
    ref.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        t = he[i * 200 : i * 200 + 192, :192]
        imsave(ref / f"t{i}.png", t, check_contrast=False)
        noisy = np.clip(t + rng.normal(0, 8 * (i + 1), t.shape), 0, 255).astype(np.uint8)
        imsave(gen / f"t{i}.png", noisy, check_contrast=False)
    return gen, ref


def test_stain_paired(tiles, tmp_path):
    gen, ref = tiles
    res = _eval_stain(gen, ref, "--paired", "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "ms_ssim" in res.output and "±" in res.output
    data = json.loads((tmp_path / "o/metrics.json").read_text())
    from skimage.io import imread

    a, b = imread(gen / "t1.png"), imread(ref / "t1.png")
    assert data["per_image"]["t1"]["ssim"] == pytest.approx(ssim(a, b))
    assert data["per_image"]["t1"]["psnr_db"] == pytest.approx(psnr(a, b))
    assert data["summary"]["ssim"]["n"] == 3
    assert 0 < data["summary"]["ms_ssim"]["mean"] < 1
    _png_ok(tmp_path / "o/paired_metrics.png")


def test_identical_images_give_the_same_counts_in_the_table_and_the_json(tiles, tmp_path):
    _, ref = tiles
    res = _eval_stain(ref, ref, "--paired", "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "n/a (n=0, 3 inf)" in res.output  # PSNR of identical images
    psnr_summary = json.loads((tmp_path / "o/metrics.json").read_text())["summary"]["psnr_db"]
    # numbers, never the strings "nan" / "inf"; the counts agree with the printed table
    assert psnr_summary["mean"] is None and psnr_summary["n"] == 0
    assert psnr_summary["n_inf"] == 3 and "dB" in psnr_summary["unit"]


def test_stain_unpaired_states_the_weights(tiles, tmp_path):
    pytest.importorskip("torch")
    gen, ref = tiles
    res = _eval_stain(gen, ref, "--unpaired", "--phash-weights", "random", "--out", tmp_path / "u")
    assert res.exit_code == 0, res.output
    assert "NOT ImageNet" in res.output
    data = json.loads((tmp_path / "u/metrics.json").read_text())
    assert "NOT ImageNet" in data["phash_weights"]
    assert set(data["phash"]) == {"t0", "t1", "t2"}
    assert all(-1 <= v <= 1 for v in data["phash"].values())
    assert len(data["dab_fraction"]["generated"]) == 3
    _png_ok(tmp_path / "u/dab_fraction.png")


def test_seg(tmp_path):
    truth = np.zeros((50, 50), np.uint16)
    truth[5:15, 5:15] = 1
    truth[30:40, 30:40] = 2
    pred = np.zeros_like(truth)
    pred[5:15, 6:16] = 4  # IoU 90 / 110 = 0.82
    pred[20:25, 20:25] = 9  # false positive
    np.save(tmp_path / "pred.npy", pred)
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    res = _eval_against_truth("seg", tmp_path / "pred.npy", tmp_path / "truth.tif", tmp_path / "s")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "s/metrics.json").read_text())
    (item,) = data["per_image"].values()
    assert (item["tp"], item["fp"], item["fn"]) == (1, 1, 1)
    assert item["accuracy"] == pytest.approx(1 / 3)
    curve = data["iou_curve"]
    assert curve["iou"][0] == 0.5 and curve["iou"][-1] == 0.95
    assert curve["tp"][:7] == [1.0] * 7 and curve["tp"][7:] == [0.0] * 3  # 0.82 < 0.85
    _png_ok(tmp_path / "s/iou_curve.png")


def test_ratio(tmp_path):
    rows_true = [("a", 0.1), ("b", 0.3), ("c", 0.6), ("d", 0.9)]
    rows_pred = [("d", 0.6), ("a", 0.12), ("b", 0.45), ("c", 0.52), ("zz", 0.5)]
    for name, rows in (("truth", rows_true), ("pred", rows_pred)):
        with (tmp_path / f"{name}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["name", "area_ratio"])
            w.writerows(rows)
    res = _eval_against_truth(
        "ratio", tmp_path / "pred.csv", tmp_path / "truth.csv", tmp_path / "r"
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r/metrics.json").read_text())
    assert data["n"] == 4  # matched by name; "zz" has no truth
    assert data["within"] == {"0.05": 0.25, "0.1": 0.5, "0.2": 0.75}
    assert data["mae"] == pytest.approx((0.02 + 0.15 + 0.08 + 0.3) / 4)
    assert data["confusion"]["rows_true_cols_pred"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]
    _png_ok(tmp_path / "r/confusion.png")
    _png_ok(tmp_path / "r/ratio_scatter.png")
    (tmp_path / "bad.csv").write_text("name,score\na,1\n")
    res = _eval_against_truth(
        "ratio", tmp_path / "bad.csv", tmp_path / "truth.csv", tmp_path / "r2"
    )
    assert res.exit_code != 0 and "no ratio column" in res.output and "bad.csv" in res.output


def test_seg_of_two_empty_images_is_perfect_agreement_everywhere(tmp_path):
    """Empty prediction of an empty truth: every score is 1.0, per image and on the curve."""
    zeros = tmp_path / "zeros.tif"
    tifffile.imwrite(zeros, np.zeros((32, 32), np.uint16))
    res = _eval_against_truth("seg", zeros, zeros, tmp_path / "s")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "s/metrics.json").read_text())
    (item,) = data["per_image"].values()
    for k in ("dice", "accuracy", "precision", "recall", "f1"):
        assert item[k] == 1.0, k
        assert data["summary_at_iou_0.5"][k]["mean"] == 1.0, k
    for k in ("accuracy", "precision", "recall", "f1"):
        assert data["iou_curve"][k] == [1.0] * 10, k


def _write_ratio_csv(path: Path, rows) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "ratio"])
        w.writerows(rows)
    return path


def test_ratio_names_the_rows_it_leaves_out(tmp_path):
    pred = _write_ratio_csv(tmp_path / "p.csv", [("a", 0.1), ("b", 0.3), ("d", 0.5)])
    truth = _write_ratio_csv(tmp_path / "t.csv", [("a", 0.1), ("b", 0.3), ("c", 0.5)])
    res = _eval_against_truth("ratio", pred, truth, tmp_path / "r")
    assert res.exit_code == 0, res.output
    warning = next(line for line in res.output.splitlines() if line.startswith("warning:"))
    assert "1 row(s) only in --pred (d)" in warning and "1 row(s) only in --truth (c)" in warning
    assert "2 matched pair(s)" in warning
    data = json.loads((tmp_path / "r/metrics.json").read_text())
    assert data["n"] == 2
    assert data["unmatched"] == {
        "pred_only": {"n": 1, "keys": ["d"]},
        "truth_only": {"n": 1, "keys": ["c"]},
    }
    # every row matched: no warning, empty lists
    res = _eval_against_truth("ratio", truth, truth, tmp_path / "r2")
    assert res.exit_code == 0 and "warning" not in res.output
    data = json.loads((tmp_path / "r2/metrics.json").read_text())
    assert data["unmatched"]["pred_only"]["n"] == data["unmatched"]["truth_only"]["n"] == 0


@pytest.mark.slow
def test_cycle_with_saved_generators(tmp_path, tiles):
    pytest.importorskip("torch")
    from napari_virtualstain.core.models import ModelCard, build_generator, save_model

    for name in ("a2b", "b2a"):
        net = build_generator("resnet_6blocks", ngf=4)
        card = ModelCard(
            name=name,
            arch="resnet_6blocks",
            arch_kwargs={"ngf": 4},
            direction="he->ki67" if name == "a2b" else "ki67->he",
            mpp=0.227,
            tile_px=128,
        )
        save_model(net, card, tmp_path / name)
    _, ref = tiles
    images = tmp_path / "images"
    images.mkdir()
    for name in ("t0", "t1"):  # two small images keep the engine's work short
        (images / f"{name}.png").write_bytes((ref / f"{name}.png").read_bytes())
    res = _eval(
        "cycle",
        "--model",
        tmp_path / "a2b",
        "--reverse",
        tmp_path / "b2a",
        "--images",
        images,
        "--out",
        tmp_path / "c",
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "c/metrics.json").read_text())
    assert set(data["per_image"]) == {"t0", "t1"}
    # untrained generators do not reconstruct: the numbers must say so
    assert data["summary"]["ssim"]["mean"] < 0.9
    # and they are the metrics of A -> B -> A, recomputed here from the QA module's
    # reconstruction of each image (its own call path into the engine)
    from skimage.io import imread

    from napari_virtualstain.core.models import load_model
    from napari_virtualstain.core.residual import reconstruct

    fwd = load_model(tmp_path / "a2b", device="cpu")
    back = load_model(tmp_path / "b2a", device="cpu")
    for name in ("t0", "t1"):
        img = imread(images / f"{name}.png")[..., :3]
        rec = reconstruct(img, fwd, back)
        got = data["per_image"][name]
        assert got["ssim"] == pytest.approx(ssim(img, rec), abs=1e-6)
        assert got["psnr_db"] == pytest.approx(psnr(img, rec), abs=1e-4)
    mean = np.mean([data["per_image"][n]["ssim"] for n in ("t0", "t1")])
    assert data["summary"]["ssim"]["mean"] == pytest.approx(mean)
    _png_ok(tmp_path / "c/cycle_metrics.png")


def test_output_folder_may_not_be_an_input(tiles):
    gen, ref = tiles
    res = _eval_stain(gen, ref, "--out", gen)
    assert res.exit_code != 0 and "is an input" in res.output


def test_one_image_is_cut_into_whole_tiles_of_the_tile_grid(tmp_path):
    from napari_virtualstain.cli.evaluate import _image_items

    img = np.random.default_rng(1).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    imsave(tmp_path / "slide.png", img, check_contrast=False)
    items = _image_items(tmp_path / "slide.png", 128)
    # partial edge tiles are left out: every item has the same size
    assert sorted(items) == sorted(f"y{y}_x{x}" for y in (0, 128) for x in (0, 128, 256))
    assert all(t.shape == (128, 128, 3) for t in items.values())
    np.testing.assert_array_equal(items["y128_x256"], img[128:256, 256:384])
    small = _image_items(tmp_path / "slide.png", 512)  # no whole tile: the image itself
    assert list(small) == ["slide"] and small["slide"].shape == img.shape
