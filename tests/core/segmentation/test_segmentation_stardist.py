"""StarDist backend: the real 2D_versatile_he architecture, weights written as Keras h5 here."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from napari_virtualstain.core.models.registry import ModelDownloadError
from napari_virtualstain.core.segmentation import Progress, get_segmenter, segment_in_blocks
from napari_virtualstain.core.segmentation._stardist_net import (
    StarDistNetConfig,
    build_stardist_unet,
    load_keras_weights,
    read_keras_weights,
)
from napari_virtualstain.core.segmentation.stardist import StarDistConfig, StarDistSegmenter
from tests.support.segmenter_contract import background_regions
from tests.support.stardist_models import (
    HE_CONFIG_DIR,
    disc_image,
    write_disc_model,
    write_random_model,
)

pytest.importorskip("stardist")
torch = pytest.importorskip("torch")

RADIUS_MODEL_PX = 8.0  # disc radius at the model's 0.5 µm/px
CENTRES_MODEL = [(36 + 56 * i + 1.5 * j, 36 + 56 * j + 0.5 * i) for i in range(3) for j in range(3)]


@pytest.fixture(scope="module")
def disc_model(tmp_path_factory):
    return write_disc_model(tmp_path_factory.mktemp("sd") / "discs", radius_px=RADIUS_MODEL_PX)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd") / "random"
    return write_random_model(folder, prob_gain=300.0, dist_offset=6.0)


def _require_tensorflow_installed():
    # Look, never import: TensorFlow in this process would crash napari's GL tests later.
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")


def _centroids(labels):
    from skimage.measure import regionprops

    props = regionprops(labels)
    return np.array([p.centroid for p in props]), np.array([p.area for p in props])


def test_config_of_2d_versatile_he():
    cfg = StarDistNetConfig.from_json(HE_CONFIG_DIR / "config.json")
    assert (cfg.n_rays, cfg.grid, cfg.n_depth, cfg.n_filter_base) == (32, (2, 2), 3, 32)
    assert cfg.div_by == (16, 16)
    # Bounded by the impulse response of the torch module (measured below).
    assert 100 < cfg.receptive_radius_px() < 200


def test_receptive_radius_bounds_the_real_dependency():
    cfg = StarDistNetConfig.from_json(HE_CONFIG_DIR / "config.json")
    torch.manual_seed(1)
    net = build_stardist_unet(cfg).eval()
    size, mid = 384, 192
    x = torch.zeros(1, 3, size, size)
    x1 = x.clone()
    x1[0, :, mid, mid] = 10.0
    with torch.no_grad():
        changed = (net(x1)[1] - net(x)[1]).abs().amax(1)[0] > 0
    ys, xs = np.nonzero(changed.numpy())
    reach = max(abs(ys * 2 - mid).max(), abs(xs * 2 - mid).max())
    assert reach <= cfg.receptive_radius_px()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("backbone", "resnet", "backbone"),
        ("unet_batch_norm", True, "batch_norm"),
        ("n_dim", 3, "n_dim"),
        ("unet_kernel_size", [4, 4], "odd"),
    ],
)
def test_unsupported_config_is_a_clear_error(key, value, message):
    import json

    cfg = json.loads((HE_CONFIG_DIR / "config.json").read_text())
    cfg[key] = value
    with pytest.raises(ValueError, match=message):
        StarDistNetConfig.from_json(cfg)


def test_keras_weights_round_trip(random_model):
    cfg = StarDistNetConfig.from_json(random_model / "config.json")
    fresh = build_stardist_unet(cfg)
    load_keras_weights(fresh, random_model / "weights_best.h5")
    names = [name for name, _ in read_keras_weights(random_model / "weights_best.h5")]
    assert names[:2] == ["conv2d", "conv2d_1"] and names[-3:] == ["features", "prob", "dist"]
    torch.manual_seed(0)  # write_random_model's seed: the same init, then its edits
    ref = build_stardist_unet(cfg)
    with torch.no_grad():
        ref.convs[-2].weight.mul_(300.0)
        ref.convs[-1].bias.add_(6.0)
    for a, b in zip(fresh.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_weights_that_do_not_match_the_config_are_rejected(random_model, tmp_path):
    import json

    cfg = json.loads((random_model / "config.json").read_text())
    cfg["n_rays"] = 16
    net = build_stardist_unet(StarDistNetConfig.from_json(cfg))
    with pytest.raises(ValueError, match=r"weights_best.h5.*dist"):
        load_keras_weights(net, random_model / "weights_best.h5")


def test_missing_model_folder_and_weights_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        StarDistSegmenter(model=str(tmp_path / "nope")).load()
    (tmp_path / "config.json").write_text((HE_CONFIG_DIR / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="weights_best.h5"):
        StarDistSegmenter(model=tmp_path).load()
    with pytest.raises(ValueError, match="unknown StarDist model"):
        StarDistSegmenter(model="2D_not_a_model").load()


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="prob_thresh"):
        StarDistConfig(prob_thresh=1.5)
    with pytest.raises(ValueError, match="norm_percentiles"):
        StarDistConfig(norm_percentiles=(99.0, 1.0))
    with pytest.raises(ValueError, match="mpp"):
        StarDistSegmenter(model="2D_versatile_he").segment(np.zeros((8, 8, 3), np.uint8), 0)


def test_tiled_prediction_equals_whole_prediction(random_model):
    image = np.random.default_rng(0).random((90, 130, 3), dtype=np.float32)
    whole = StarDistSegmenter(model=random_model, tile_px=1024).predict(image)
    tiled = StarDistSegmenter(model=random_model, tile_px=64).predict(image)  # 2 x 3 tiles
    assert whole[0].shape == (45, 65) and whole[1].shape == (45, 65, 32)
    np.testing.assert_allclose(tiled[0], whole[0], atol=1e-5)
    np.testing.assert_allclose(tiled[1], whole[1], atol=1e-4)


@pytest.mark.parametrize("mpp", [0.5, 0.25, 0.4])
def test_finds_each_disc_once_with_its_size_at_any_mpp(disc_model, mpp):
    f = 0.5 / mpp  # input px per model px
    shape = (round(200 * f), round(210 * f))
    centres = np.array(CENTRES_MODEL) * f
    img = disc_image(shape, centres, RADIUS_MODEL_PX * f)
    labels = get_segmenter("stardist", model=disc_model, model_mpp=0.5).segment(img, mpp)
    assert labels.dtype == np.uint32 and labels.shape == shape
    found, areas = _centroids(labels)
    assert len(found) == len(centres) == labels.max()
    errors = found[:, None] - centres[None]
    nearest = errors[np.arange(len(found)), np.linalg.norm(errors, axis=2).argmin(1)]
    # Candidates sit on StarDist's 2-px grid, at the first pixel of their cell: up to a model
    # pixel off per axis, on average half a model pixel up-left, in input pixels scaled by f.
    assert np.abs(nearest).max() <= 1.5 * f
    assert np.abs(nearest.mean(0) + 0.5 * f).max() <= 0.5 * f
    # 32-gon of the disc radius, drawn at the input resolution.
    expected = 0.5 * 32 * np.sin(2 * np.pi / 32) * (RADIUS_MODEL_PX * f) ** 2
    assert np.abs(np.median(areas) / expected - 1) < 0.08


@pytest.mark.slow
def test_large_roi_in_blocks_counts_discs_on_block_borders_once(disc_model):
    centres = [(y, x) for y in (60, 128, 190) for x in (64, 128, 200)]  # on the 128-px borders
    img = disc_image((256, 256), centres, RADIUS_MODEL_PX)
    seg = StarDistSegmenter(model=disc_model, norm_range=(40.0, 240.0))
    whole = seg.segment(img, 0.5)
    blocks = segment_in_blocks(seg, img, 0.5, block_px=128, overlap_px=32)
    assert whole.max() == blocks.max() == len(centres)
    # Each nucleus is whole: the same pixels as in the single-pass result.
    assert ((blocks > 0) == (whole > 0)).mean() > 0.995


@background_regions(tiny=(3, 5, 240), glass=(300, 260, 242))
def test_empty_and_background_regions_give_zero_labels(disc_model, rgb):
    rgb = rgb.copy()
    if rgb.size:
        rgb += np.random.default_rng(0).integers(0, 4, rgb.shape, dtype=np.uint8)  # JPEG-ish
    labels = StarDistSegmenter(model=disc_model).segment(rgb, 0.25)
    assert labels.shape == rgb.shape[:2] and labels.dtype == np.uint32 and not labels.any()


def test_tissue_without_nuclei_gives_zero_labels(disc_model):
    # High contrast, but nothing as dark as a nucleus: no candidate survives prob_thresh.
    img = np.full((128, 128, 3), 235, np.uint8)
    img[:, 64:] = (200, 150, 190)
    labels = StarDistSegmenter(model=disc_model, norm_range=(0.0, 255.0)).segment(img, 0.5)
    assert labels.max() == 0


def test_progress_reports_every_tile_and_stopping_cancels(disc_model):
    img = disc_image((128, 128), [(60, 70)], RADIUS_MODEL_PX)
    # One nucleus is under 1 % of the pixels: fix the range, percentiles would call it glass.
    seg = StarDistSegmenter(model=disc_model, tile_px=64, norm_range=(40.0, 240.0))
    steps: list[Progress] = []
    seg.segment(img, 0.5, progress=steps.append)
    tiles = [s for s in steps if s.message.startswith("StarDist tile")]
    assert len(tiles) == 4 and [s.done for s in tiles] == list(range(4))
    assert {s.total for s in steps} == {5} and steps[-1].done == 4  # the NMS comes last
    gen = seg.iter_segment(img, 0.5)
    next(gen), next(gen)
    gen.close()  # cancel after two tiles: the generator ends without finishing
    with pytest.raises(StopIteration):
        next(gen)


def test_tensorflow_never_enters_this_process(disc_model):
    StarDistSegmenter(model=disc_model).segment(disc_image((64, 64), [(32, 32)], 8), 0.5)
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules


@pytest.mark.slow
def test_torch_port_equals_tensorflow_stardist(random_model):
    """The reference: stardist's own TensorFlow model on the same h5, in a child process."""
    _require_tensorflow_installed()
    from napari_virtualstain.core.segmentation._tf_safe import predict_stardist_tf

    image = np.random.default_rng(0).random((100, 140, 3), dtype=np.float32)
    seg = StarDistSegmenter(model=random_model, tile_px=64)
    prob, dist = seg.predict(image)
    threshold = float(np.median(prob))
    ref = predict_stardist_tf(random_model, image, prob_thresh=threshold, nms_thresh=0.3)
    np.testing.assert_allclose(prob, ref["prob"], atol=1e-5)
    np.testing.assert_allclose(dist, ref["dist"], atol=1e-4)
    seg = StarDistSegmenter(model=random_model, prob_thresh=threshold, nms_thresh=0.3)
    labels = seg._labels_from_prediction(prob, dist, image.shape[:2], image.shape[:2])
    from skimage.segmentation import relabel_sequential

    expected = relabel_sequential(ref["labels"])[0]
    assert labels.max() > 20
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.slow
def test_download_of_a_pretrained_model_is_wired_or_fails_clearly():
    """Offline (as in CI here) stardist's download fails: the error must say what to do."""
    _require_tensorflow_installed()
    from napari_virtualstain.core.segmentation._tf_safe import download_stardist_model

    try:
        folder = download_stardist_model("2D_versatile_he", timeout_s=300)
    except ModelDownloadError as err:  # an OSError: the CLI gives it one line
        assert "2D_versatile_he" in str(err) and "local folder" in str(err)
    else:
        assert (folder / "config.json").is_file() and (folder / "weights_best.h5").is_file()
