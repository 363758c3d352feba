"""channels_last is used only where measured faster, remembered, and changes no pixel."""

from __future__ import annotations

import json

import numpy as np
import torch

from napari_virtualstain.core.engine import StainConfig, StainEngine
from napari_virtualstain.core.models import LoadedModel, ModelCard, build_generator, infer_tiles
from napari_virtualstain.core.models.precision import CACHE_FILE, choose_memory_format


def tiny():
    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=4, init="xavier").eval()
    card = ModelCard(name="tiny-layout", arch="resnet_6blocks", arch_kwargs={"ngf": 4},
                     mpp=0.25, tile_px=64)  # fmt: skip
    return LoadedModel(module=module, card=card, path=None)


def test_the_layout_is_measured_once_and_recalled(tmp_path):
    module = tiny().module
    cpu = torch.device("cpu")
    first = choose_memory_format(module, cpu, "fp32", "tiny", cache_dir=tmp_path)
    assert not first.cached and "contiguous layout on a 192 px fp32 pass" in first.reason
    entries = json.loads((tmp_path / CACHE_FILE).read_text())
    (key,) = [k for k in entries if "layout" in k]
    assert entries[key]["channels_last"] == first.channels_last
    again = choose_memory_format(module, cpu, "fp32", "tiny", cache_dir=tmp_path)
    assert again.cached and again.channels_last == first.channels_last
    assert not choose_memory_format(module, cpu, "int8", "tiny", cache_dir=tmp_path).channels_last


def test_a_channels_last_engine_gives_the_same_pixels(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_CACHE", str(tmp_path))
    loaded = tiny()
    engine = StainEngine(loaded, StainConfig(device="cpu", precision="fp32"))
    # Measured, then recorded as faster (as on Zen 4): this engine takes the channels_last path.
    choose_memory_format(engine._base_module, engine.device, "fp32",
                         'resnet_6blocks {"ngf": 4}', engine.stride_px)  # fmt: skip
    entries = json.loads((tmp_path / CACHE_FILE).read_text())
    for value in entries.values():
        if "channels_last" in value:
            value["channels_last"] = True
    (tmp_path / CACHE_FILE).write_text(json.dumps(entries))
    engine.fix_norm_stats(None)
    assert engine.channels_last and "(cached)" in engine.layout_reason
    conv = next(m for m in engine.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    base_conv = next(m for m in loaded.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert not base_conv.weight.is_contiguous(memory_format=torch.channels_last)  # not converted
    tiles = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    plain = infer_tiles(loaded.module, tiles, "cpu").astype(int)
    assert np.abs(engine.stain_batch(tiles).astype(int) - plain).max() <= 1
