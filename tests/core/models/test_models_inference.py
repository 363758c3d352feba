"""uint8 in / uint8 out inference, precision, device choice, progress and cancel."""

from __future__ import annotations

import os
import platform
import sys

import numpy as np
import pytest
import torch
from torch import nn

from napari_virtualstain.core.models import (
    build_generator,
    choose_device,
    infer_tiles,
    precision_difference,
)
from napari_virtualstain.core.progress import Cancelled, CancelToken


class Passthrough(nn.Module):
    """Returns its input: inference must give back the very same uint8 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.scale


def test_uint8_round_trip_through_the_network_range():
    tiles = np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 16, 16, 3)
    np.testing.assert_array_equal(infer_tiles(Passthrough(), tiles, "cpu"), tiles)
    np.testing.assert_array_equal(
        infer_tiles(Passthrough(), tiles, "cpu", normalisation="[0,1]"), tiles
    )


def test_outputs_are_clipped_not_wrapped():
    class Bright(Passthrough):
        def forward(self, x):
            return x + 3.0

    out = infer_tiles(Bright(), np.zeros((1, 4, 4, 3), np.uint8), "cpu")
    assert out.dtype == np.uint8 and (out == 255).all()


def test_bad_tiles_are_named():
    with pytest.raises(ValueError, match=r"uint8 tiles of shape \(N, H, W, 3\)"):
        infer_tiles(Passthrough(), np.zeros((4, 4, 3), np.uint8), "cpu")
    with pytest.raises(ValueError, match="float32"):
        infer_tiles(Passthrough(), np.zeros((1, 4, 4, 3), np.float32), "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        infer_tiles(Passthrough(), np.zeros((1, 4, 4, 3), np.uint8), "cpu", precision="int4")
    with pytest.raises(ValueError, match="needs a quantised module"):
        infer_tiles(Passthrough(), np.zeros((1, 4, 4, 3), np.uint8), "cpu", precision="int8")


@pytest.mark.slow
def test_bf16_is_close_to_fp32_and_batches_agree():
    torch.manual_seed(0)
    g = build_generator("resnet_6blocks", ngf=4, init="xavier")
    tiles = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    one_by_one = infer_tiles(g, tiles, batch_size=1)
    np.testing.assert_array_equal(one_by_one, infer_tiles(g, tiles, batch_size=3))
    delta = precision_difference(g, tiles, "bf16")
    assert 0 < delta["mean_abs_diff"] < 3
    assert delta["max_abs_diff"] < 40


def test_progress_and_cancel():
    calls = []
    tiles = np.zeros((5, 8, 8, 3), np.uint8)

    def record(p):
        calls.append((p.done, p.total))

    infer_tiles(Passthrough(), tiles, "cpu", batch_size=2, progress=record)
    assert calls == [(2, 5), (4, 5), (5, 5)]
    token = CancelToken()

    def record_then_cancel(p):
        record(p)
        if len(calls) > 3:
            token.cancel()

    with pytest.raises(Cancelled):
        infer_tiles(
            Passthrough(), tiles, "cpu", batch_size=2, cancel=token, progress=record_then_cancel
        )
    assert len(calls) == 4  # stopped after one more batch


def test_choose_device(monkeypatch):
    monkeypatch.delenv("NAPARI_VIRTUALSTAIN_DEVICE", raising=False)
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else ("mps" if torch.backends.mps.is_available() else "cpu")
    )
    assert choose_device().type == expected
    assert choose_device("cpu").type == "cpu"
    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_DEVICE", "cpu")
    assert choose_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            choose_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        choose_device("tpu9")


class ChipConv(nn.Conv2d):
    """A convolution that takes ``slow_s`` per 64² px longer in one precision: a chip where
    that precision is emulated (``slow="reduced"``) or where it is native (``slow="fp32"``)."""

    def __init__(self, slow: str, slow_s: float = 0.02) -> None:
        super().__init__(3, 3, 3, padding=1)
        self.slow, self.slow_s = slow, slow_s

    def forward(self, x):
        import time

        reduced = torch.is_autocast_enabled(x.device.type)
        if reduced == (self.slow == "reduced"):
            time.sleep(self.slow_s * max(x.shape[-1] * x.shape[-2] / 64**2, 0.25))
        return super().forward(x)


class Chip(nn.Module):
    """A one-layer generator on such a chip; counts its forward passes."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.conv = ChipConv(slow)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def test_auto_precision_keeps_fp32_where_the_reduced_one_is_slower_and_caches_it(tmp_path):
    from napari_virtualstain.core.models.precision import CACHE_FILE, choose_precision

    chip = Chip(slow="reduced")
    choice = choose_precision(chip, torch.device("cpu"), "chip", cache_dir=tmp_path)
    assert choice.precision == "fp32" and choice.candidate == "bf16" and not choice.cached
    # rejected by the 16 px probe (emulated) or by the working-size comparison
    assert "slower than fp32" in choice.reason or "not faster than fp32" in choice.reason
    assert choice.reduced_ms > choice.fp32_ms
    saved = (tmp_path / CACHE_FILE).read_text()
    assert "chip" in saved and "torch " in saved
    calls = chip.calls
    again = choose_precision(chip, torch.device("cpu"), "chip", cache_dir=tmp_path)
    assert again.cached and again.precision == "fp32" and chip.calls == calls  # not re-measured


def test_auto_precision_takes_the_reduced_one_where_measured_faster(tmp_path):
    from napari_virtualstain.core.models.precision import choose_precision

    choice = choose_precision(Chip(slow="fp32"), torch.device("cpu"), "fast", cache_dir=tmp_path)
    assert choice.precision == "bf16" and "faster than fp32" in choice.reason
    # another architecture on the same machine is measured on its own
    other = choose_precision(Chip(slow="reduced"), torch.device("cpu"), "slow", cache_dir=tmp_path)
    assert other.precision == "fp32" and not other.cached


def test_engine_records_why_it_runs_at_its_precision(tmp_path, monkeypatch):
    from napari_virtualstain.core.engine import StainConfig, StainEngine
    from napari_virtualstain.core.models import LoadedModel, ModelCard

    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_CACHE", str(tmp_path))
    card = ModelCard(name="chip", arch="resnet_6blocks", arch_kwargs={"ngf": 4})
    loaded = LoadedModel(module=Chip(slow="reduced"), card=card, path=None)
    fixed = StainEngine(loaded, StainConfig(device="cpu", precision="fp32"))
    assert fixed.precision == "fp32" and fixed.precision_reason == "set by the user"
    auto = StainEngine(loaded, StainConfig(device="cpu", precision="auto"))
    assert auto.precision == "fp32" and auto.precision_reason.startswith("auto: bf16")
    assert (tmp_path / "precision.json").exists()
    # fp32 kept on a CPU with int8 kernels: the faster option is offered, not taken
    assert auto.precision_reason.endswith(
        "--precision int8 (it changes pixels: its SSIM "
        "against fp32 is measured on each slide and printed)"
    )


def test_the_machine_key_names_the_instruction_set_not_only_the_model_string(monkeypatch):
    """A cloud VM may call an AVX2-only EPYC and a Zen 4 both "AMD EPYC": a choice cached on
    one must not be reused on the other, nor under an instruction-set cap."""
    from napari_virtualstain.core.models.precision import machine_key

    native = machine_key(torch.device("cpu"))
    assert torch.backends.cpu.get_cpu_capability() in native
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = machine_key(torch.device("cpu"))
    assert capped != native and "ONEDNN_MAX_CPU_ISA=AVX2" in capped


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 instruction sets")
def test_auto_keeps_fp32_where_bf16_is_emulated(tmp_path):
    """The issue's AVX2-only EPYC, emulated: oneDNN and ATen capped at AVX2 run bf16 in
    reference kernels (470x slower than fp32 here). ``auto`` must measure that and keep fp32,
    and quickly (the 16 px probe rejects it after one call)."""
    import subprocess

    code = (
        "import time, torch\n"
        "from napari_virtualstain.core.models import build_generator\n"
        "from napari_virtualstain.core.models.precision import choose_precision\n"
        "torch.manual_seed(0)\n"
        "net = build_generator('resnet_6blocks', ngf=16).eval()\n"
        "t0 = time.perf_counter()\n"
        f"c = choose_precision(net, torch.device('cpu'), 'r6', cache_dir={str(tmp_path)!r})\n"
        "print(c.precision, round(time.perf_counter() - t0, 1), '|', c.reason)\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    precision, seconds, *_ = out.stdout.split()
    assert precision == "fp32", out.stdout
    assert "slower than fp32" in out.stdout or "not faster than fp32" in out.stdout
