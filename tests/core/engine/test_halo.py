"""The measured halo: smaller than the receptive field, within a grey level of exact tiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_virtualstain.core.engine import halo
from napari_virtualstain.core.engine.halo import candidates
from tests.core.engine.test_lazy import fresh_cache, make_slide
from tests.support import PACKAGE_DATA
from tests.support.models import tiny_loaded

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from napari_virtualstain.core.engine.lazy import open_virtual_stain  # noqa: E402


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_CACHE", str(tmp_path))
    halo._MEMO.clear()
    yield tmp_path
    halo._MEMO.clear()


@pytest.fixture(scope="module")
def model():
    return tiny_loaded("tiny-halo", "2" * 64, seed=1)


@pytest.fixture(scope="module")
def rgb():
    return tifffile.imread(PACKAGE_DATA / "OS-1-detail_HE.ome.tif")[:320, :320].copy()


def test_candidates_are_on_the_stride_and_below_the_exact_halo():
    assert candidates(88, 4) == [24, 36, 44, 56, 68]
    assert all(h % 8 == 0 and h < 60 for h in candidates(60, 8))


def open_stain(rgb, model, **kw):
    vs = open_virtual_stain(make_slide(rgb), model, device="cpu", precision="fp32", tile_px=64,
                            cache=fresh_cache(), **kw)  # fmt: skip
    return vs, vs.levels[0].compute()


def test_measured_halo_tiles_are_within_a_grey_level_of_exact_tiles(rgb, model, user_cache):
    measured, out = open_stain(rgb, model)
    exact, ref = open_stain(rgb, model, halo_px=60)  # covers the 117 px receptive field
    assert exact.plan.halo_px == 60 and exact.plan.mode == "crop"
    assert measured.plan.mode == "crop" and measured.plan.halo_px < 60
    assert measured.plan.tile_px == 64  # the tiles stay; only the halo shrinks
    assert "measured" in measured.plan.statement and "from exact 60 px" in measured.plan.statement
    diff = np.abs(out.astype(int) - ref)
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert measured.namespace != exact.namespace  # their tiles are cached apart


def test_the_halo_is_measured_once_per_model_and_kept(rgb, model, user_cache, monkeypatch):
    first, _ = open_stain(rgb, model)
    known = json.loads((user_cache / "halos.json").read_text())
    (entry,) = known.values()
    assert entry["halo_px"] == first.plan.halo_px and entry["exact_px"] == 60
    assert entry["max_diff"][str(entry["halo_px"])] <= 1
    halo._MEMO.clear()  # a new process: read back, not measured again

    def no_measuring(*args):
        raise AssertionError("measured again")

    monkeypatch.setattr(halo, "measure_halo", no_measuring)
    again, _ = open_stain(rgb, model)
    assert again.plan.halo_px == first.plan.halo_px


def test_a_set_halo_or_blending_is_not_measured(rgb, model, user_cache):
    set_halo, _ = open_stain(rgb, model, halo_px=32)
    assert set_halo.plan.halo_px == 32 and "measured" not in set_halo.plan.statement
    blended, _ = open_stain(rgb, model, blend="blend")
    assert "measured" not in blended.plan.statement
    assert not (user_cache / "halos.json").exists()


def test_a_model_without_instance_norms_is_measured_too(rgb, user_cache):
    from napari_virtualstain.core.models import LoadedModel, ModelCard, build_generator

    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=4, norm="batch", init="xavier").eval()
    card = ModelCard(name="tiny-bn", arch="resnet_6blocks", arch_kwargs={"ngf": 4, "norm": "batch"},
                     mpp=0.25, tile_px=64, receptive_field_px=117, sha256="3" * 64)  # fmt: skip
    loaded = LoadedModel(module=module, card=card, path=None)
    measured, out = open_stain(rgb, loaded)
    exact, ref = open_stain(rgb, loaded, halo_px=60)
    assert measured.plan.norm == "tile" and "measured" in measured.plan.statement
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_each_slide_checks_the_models_halo_and_keeps_exact_tiles_where_it_fails(
    rgb, model, user_cache, monkeypatch
):
    from napari_virtualstain.core.engine import calibrate

    measured, _ = open_stain(rgb, model)  # the model's halo, checked on this slide
    assert "this slide's check" in measured.plan.statement
    other = rgb[::-1].copy()  # another slide: its own check, on its own probe
    monkeypatch.setattr(halo, "halo_error", lambda *args: 5)  # as if it left 5 grey levels
    calibrate._MEMO.clear()
    exact, out = open_stain(other, model)
    assert exact.plan.halo_px == 60 and exact.plan.mode == "crop"
    assert "left 5 grey levels on this slide's check probe" in exact.plan.statement
    assert exact.engine.halo_choice.halo_px == 60
    monkeypatch.undo()
    reference, ref = open_stain(other, model, halo_px=60)
    assert np.array_equal(out, ref)


def test_a_damaged_halos_json_is_measured_again(rgb, model, user_cache):
    (user_cache / "halos.json").write_text("{not json")
    measured, _ = open_stain(rgb, model)
    assert "measured" in measured.plan.statement
    assert json.loads((user_cache / "halos.json").read_text())  # rewritten, readable
