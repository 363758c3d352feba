"""int8: an option that runs a statically quantised generator, with its SSIM vs fp32 recorded."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from skimage.metrics import structural_similarity

from napari_virtualstain.core.engine import StainConfig
from napari_virtualstain.core.engine.cache import MemoryLRU, TileCache
from napari_virtualstain.core.engine.lazy import open_virtual_stain
from napari_virtualstain.core.models import build_generator
from napari_virtualstain.core.models.device import autocast_dtype
from napari_virtualstain.core.models.inference import is_quantized
from tests.core.engine.test_lazy import make_slide
from tests.support import PACKAGE_DATA
from tests.support.models import tiny_loaded


@pytest.fixture(scope="module")
def model():
    return tiny_loaded("tiny8", "1" * 64, ngf=8)


@pytest.fixture(scope="module")
def rgb():
    return tifffile.imread(PACKAGE_DATA / "OS-1-detail_HE.ome.tif")[:256, :256].copy()


def stain(rgb, model, precision):
    vs = open_virtual_stain(make_slide(rgb), model, device="cpu", precision=precision,
                            tile_px=128, tissue=None, cache=TileCache(MemoryLRU()))  # fmt: skip
    return vs, vs.levels[0].compute()


def test_int8_runs_a_quantised_module_and_records_its_ssim(rgb, model):
    ref_vs, ref = stain(rgb, model, "fp32")
    vs, out = stain(rgb, model, "int8")
    assert is_quantized(vs.engine.module) and not is_quantized(ref_vs.engine.module)
    assert not np.array_equal(out, ref)  # int8 really ran: the pixels change
    report = vs.metadata["int8"]
    assert report["n_calibration_tiles"] >= 1 and report["n_check_tiles"] >= 1
    assert "int8" in vs.metadata["precision_reason"] and "SSIM" in vs.metadata["precision_reason"]
    whole_ssim = structural_similarity(ref, out, channel_axis=2, data_range=255)
    # The SSIM measured on held-out tiles speaks for the whole image ...
    assert abs(report["ssim_vs_fp32"] - whole_ssim) < 0.1
    # ... and the quantised model is still this model.
    assert whole_ssim > 0.8
    assert np.abs(out.astype(int) - ref).mean() < 12
    assert ref_vs.metadata["int8"] is None
    assert vs.namespace != ref_vs.namespace  # int8 tiles are never served as fp32 ones


def test_int8_is_refused_where_it_cannot_run():
    with pytest.raises(ValueError, match="CPU only"):
        autocast_dtype("int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="norm='slide'"):
        StainConfig(precision="int8", norm="tile")
    assert autocast_dtype("int8", torch.device("cpu")) is None  # no autocast: the module is int8


def test_a_generator_that_cannot_be_quantised_is_a_clear_error(rgb):
    from napari_virtualstain.core.models.quantize import quantize_int8

    torch.manual_seed(0)
    attention = build_generator("pyramid_pix2pix", ngf=4, attention=True).eval()
    tiles = rgb[None, :64, :64].copy()
    with pytest.raises(ValueError, match="cannot be quantised to int8.*use fp32 or bf16"):
        quantize_int8(attention, tiles, tiles)


def test_a_stored_int8_calibration_gives_the_same_module(rgb, model, tmp_path):
    from napari_virtualstain.core.models.quantize import (
        Int8Calibration,
        calibrate_int8,
        int8_from_calibration,
    )

    module = model.module.eval()
    tiles = np.stack([rgb[:64, :64], rgb[64:128, 64:128]])
    quantized, calibration = calibrate_int8(module, tiles[:1], tiles[1:])
    calibration.save(tmp_path / "int8.safetensors")
    again = Int8Calibration.load(tmp_path / "int8.safetensors")
    assert again.report == calibration.report and again.example_px == 64
    x = torch.from_numpy(rgb[None, :128, :128].copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        assert torch.equal(int8_from_calibration(module, again)(x), quantized(x))
    other = build_generator("resnet_9blocks", ngf=4).eval()  # another architecture: refused
    with pytest.raises(ValueError, match="does not fit"):
        int8_from_calibration(other, again)


def test_a_reopened_slide_reuses_its_int8_calibration(rgb, model, tmp_path, caplog):
    from napari_virtualstain.core.engine import calibrate

    slide_rgb = rgb.copy()
    slide_rgb[0, 0] = 3  # a slide no other test opens

    def open_int8():
        vs = open_virtual_stain(make_slide(slide_rgb), model, device="cpu", precision="int8",
                                tile_px=128, tissue=None, cache_dir=str(tmp_path),
                                cache=TileCache(MemoryLRU()))  # fmt: skip
        return vs, vs.levels[0].compute()

    first, out = open_int8()
    stored = list((tmp_path / "calibration").glob("int8-*.safetensors"))
    assert len(stored) == 1 and "stored calibration" not in first.engine.precision_reason
    calibrate._MEMO.clear()  # a new process: only the disk cache remembers
    again, out_again = open_int8()
    assert "stored calibration of this slide" in again.engine.precision_reason
    assert again.metadata["int8"] == first.metadata["int8"]
    assert np.array_equal(out_again, out)
    stored[0].write_bytes(b"not a calibration")  # damaged: measured again, with a warning
    calibrate._MEMO.clear()
    third, out_third = open_int8()
    assert "stored calibration" not in third.engine.precision_reason
    assert np.array_equal(out_third, out)
    assert "unreadable" in caplog.text


def test_calibration_histograms_every_other_row_and_column_of_large_maps():
    """The default observers, subsampled: a 64 x 64 map counts a quarter of its values, a small
    one all of them; FX's stack-trace switch is restored after preparing."""
    from torch.fx import config as fx_config

    from napari_virtualstain.core.models.quantize import _prepared, qconfig_mapping

    mapping = qconfig_mapping("x86")
    large, small = mapping.global_qconfig.activation(), mapping.global_qconfig.activation()
    x = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64)
    assert large(x) is x  # the observer passes its input through untouched
    assert float(large.histogram.sum()) == x.numel() / 4
    assert float(large.min_val) == pytest.approx(-1) and float(large.max_val) < 1
    small(x[..., :16, :16])
    assert float(small.histogram.sum()) == 2 * 3 * 16 * 16
    before = fx_config.do_not_emit_stack_traces
    _prepared(build_generator("resnet_6blocks", ngf=4).eval(), 64, "[-1,1]")
    assert fx_config.do_not_emit_stack_traces == before
