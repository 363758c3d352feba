"""QA layer data: placement from the result's frame, units, one-level pyramids, NaN-safe limits,
and the legend (units and meaning) of every kind. No display needed."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtualstain._napari.residual_layers import (
    legend,
    qa_layer_data,
    symmetric_limits,
)
from napari_virtualstain.core.geometry import Box
from napari_virtualstain.core.qa import QAResult


def _result(maps, scale=(0.5, 0.5), translate=(10.25, -3.0)):
    return QAResult(maps, {}, {}, Box(4, 6, 20, 30), 0.5, scale, translate)


def test_layers_are_placed_by_the_result_and_carry_units():
    signed = np.linspace(-0.2, 0.4, 600, dtype=np.float32).reshape(20, 30)
    signed[0, 0] = np.nan  # a pixel the overlay had not computed
    maps = {
        "dab residual": (signed, "dab"),
        "local SSIM": ([np.ones((20, 30), np.float32)], "ssim"),  # a one-level pyramid
        "DAB disagreement": (np.zeros((20, 30), np.uint8), "disagreement"),
    }
    out = {
        kw["name"]: (data, kw, kind)
        for data, kw, kind in qa_layer_data(_result(maps), units=("µm", "µm"))
    }
    data, kw, kind = out["dab residual"]
    assert kind == "image" and kw["scale"] == (0.5, 0.5) and kw["translate"] == (10.25, -3.0)
    assert kw["units"] == ("µm", "µm")
    lo, hi = kw["contrast_limits"]
    assert lo == -hi and 0.35 < hi <= 0.4  # symmetric, from the finite values only
    data, kw, _ = out["local SSIM"]
    assert isinstance(data, np.ndarray) and kw["multiscale"] is False
    assert out["DAB disagreement"][2] == "labels"
    meta = out["dab residual"][1]["metadata"]["napari_virtualstain"]
    assert meta["qa_kind"] == "dab" and meta["box_px"] == [4, 6, 24, 36]


def test_without_a_frame_the_box_is_placed_in_mpp_units():
    result = QAResult({"rgb residual": (np.zeros((20, 30), np.float32), "rgb")}, {}, {},
                      Box(4, 6, 20, 30), 0.5)  # fmt: skip
    ((_, kw, _),) = qa_layer_data(result)
    assert kw["scale"] == (0.5, 0.5) and kw["translate"] == (2.0, 3.0) and "units" not in kw


def test_symmetric_limits_never_collapse():
    assert symmetric_limits(np.zeros((4, 4))) == (-1e-3, 1e-3)
    assert symmetric_limits(np.full((4, 4), np.nan)) == (-1e-3, 1e-3)


@pytest.mark.parametrize(
    ("name", "kind", "units", "low"),
    [
        ("rgb residual", "rgb", "grey levels / 255 (mean of R, G, B), virtual - real", "virtual darker"),
        ("od residual", "od", "optical density (mean of R, G, B), virtual - real", "virtual holds less stain than real"),
        ("dab residual", "dab", "DAB optical density, virtual - real", "virtual holds less stain than real"),
        ("hematoxylin residual", "hematoxylin", "hematoxylin optical density, virtual - real", "virtual holds less stain than real"),
        ("cycle error (source - reconstruction)", "rgb", "grey levels / 255 (mean of R, G, B), source - reconstruction", "source darker"),
        ("local SSIM", "ssim", "local SSIM (11 px window)", "dissimilar"),
        ("DAB disagreement", "disagreement", "nuclei", "positive only in the virtual stain"),
    ],
)  # fmt: skip
def test_legend_says_units_and_meaning(name, kind, units, low):
    lg = legend(name, kind, (-0.3, 0.3) if kind != "ssim" else (0.0, 1.0))
    assert lg.units == units and lg.low_means == low and len(lg.colors) >= 2
    if kind in ("rgb", "od", "dab", "hematoxylin"):
        assert lg.ticks() == ["-0.3", "+0", "+0.3"]
    assert legend(name, "unknown", (0, 1)) is None
