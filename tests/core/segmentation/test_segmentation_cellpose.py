"""Cellpose backend through the real code path: a random-init ``nuclei``-style network on disk."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain.core.models.registry import ModelDownloadError  # noqa: E402
from napari_virtualstain.core.segmentation import get_segmenter
from napari_virtualstain.core.segmentation.cellpose import CellposeConfig, CellposeSegmenter
from tests.support.segmenter_contract import background_regions

pytest.importorskip("cellpose")
torch = pytest.importorskip("torch")


def _write_nuclei_style_model(path, cellprob_bias: float | None = None, seed: int = 0):
    """Cellpose 3's ``nuclei`` architecture (2 channels in, 3 out, diam_mean 17), random init."""
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(seed)
    net = CPnet([2, 32, 64, 128, 256], 3, sz=3, mkldnn=False, max_pool=True, diam_mean=17.0)
    if cellprob_bias is not None:
        with torch.no_grad():
            net.output[2].weight.zero_()  # output = BatchNorm, ReLU, 1x1 conv -> dY, dX, prob
            net.output[2].bias[:] = torch.tensor([0.0, 0.0, cellprob_bias])
    net.save_model(str(path))
    return path


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return _write_nuclei_style_model(tmp_path_factory.mktemp("cp") / "nuclei_random")


def _tissue(shape=(96, 112), seed=0):
    """Pink background with dark purple blobs (contrast enough to be segmented)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.empty((*shape, 3))
    img[:] = (225.0, 180.0, 210.0)
    for cy, cx in rng.uniform(10, min(shape) - 10, (8, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 49] = (80.0, 50.0, 120.0)
    return (img + rng.normal(0, 4, img.shape)).clip(0, 255).astype(np.uint8)


def test_local_model_file_loads_through_cellpose(random_model):
    seg = get_segmenter("cellpose", model=random_model)
    assert isinstance(seg, CellposeSegmenter)
    assert seg.diam_mean_px == pytest.approx(17.0)  # read back from the file, not assumed
    loaded = seg.load().net.state_dict()
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    ref = CPnet([2, 32, 64, 128, 256], 3, sz=3, mkldnn=False, max_pool=True, diam_mean=17.0)
    key = "downsample.down.res_down_0.conv.conv_0.2.weight"
    assert torch.equal(loaded[key], ref.state_dict()[key])


@pytest.mark.parametrize(("diameter_um", "mpp"), [(8.0, 0.25), (8.0, 0.5), (10.0, 0.227)])
def test_diameter_and_min_area_are_converted_with_mpp(random_model, diameter_um, mpp):
    seg = CellposeSegmenter(model=random_model, diameter_um=diameter_um, min_area_um2=10.0)
    opts = seg.eval_options(mpp)
    assert opts["diameter"] == pytest.approx(diameter_um / mpp)
    assert opts["min_size"] == round(10.0 / mpp**2)


def test_segment_runs_the_real_cellpose_path(random_model):
    img = _tissue()
    labels = CellposeSegmenter(model=random_model, device="cpu").segment(img, 0.5)
    assert labels.shape == img.shape[:2] and labels.dtype == np.uint32
    ids = np.unique(labels)
    # Sequential 1..N, whatever the random network found.
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, len(ids)))


def test_a_network_that_sees_no_cells_gives_zero_labels(tmp_path):
    path = _write_nuclei_style_model(tmp_path / "never", cellprob_bias=-20.0)
    labels = CellposeSegmenter(model=path).segment(_tissue(), 0.5)
    assert labels.shape == (96, 112) and not labels.any()


@background_regions(tiny=(4, 6, 200), glass=(120, 90, 243))
def test_empty_and_background_regions_give_zero_labels(random_model, rgb):
    seg = CellposeSegmenter(model=random_model)
    labels = seg.segment(rgb, 0.25)
    assert labels.shape == rgb.shape[:2] and labels.dtype == np.uint32 and not labels.any()
    assert seg._model is None  # decided before the network was even loaded


def test_missing_file_and_unknown_name_are_clear_errors(tmp_path):
    # Cellpose itself would fall back to cyto3 silently here.
    with pytest.raises(FileNotFoundError, match="not found"):
        CellposeSegmenter(model=tmp_path / "missing.pth").load()
    with pytest.raises(ValueError, match="unknown Cellpose model"):
        CellposeSegmenter(model="nucleii").load()


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="diameter_um"):
        CellposeConfig(diameter_um=0)
    with pytest.raises(ValueError, match="norm_range"):
        CellposeConfig(norm_range=(200.0, 100.0))
    with pytest.raises(ValueError, match="RGB"):
        CellposeSegmenter().segment(np.zeros((8, 8), np.uint8), 0.5)


@pytest.mark.slow
def test_builtin_name_downloads_or_fails_clearly():
    """Offline (as here) Cellpose's download fails: the error must say what to do instead."""
    seg = CellposeSegmenter(model="nuclei", device="cpu")
    try:
        seg.load()
    except ModelDownloadError as err:  # an OSError: the CLI gives it one line
        assert "nuclei" in str(err) and "local" in str(err)
    else:  # online, or already in ~/.cellpose/models
        assert seg.diam_mean_px == pytest.approx(17.0)
