"""Empirical receptive field against kernel/stride arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_virtualstain.core.models import (
    arch_receptive_field,
    build_generator,
    measure_receptive_field,
    receptive_field_px,
)


def test_plain_convolution_stack():
    torch.manual_seed(0)
    # 3x3 + 5x5 (stride 1): 1 + 2 + 4 = 7 px; radius 3
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 5, padding=2))
    rf = measure_receptive_field(net, start_px=32)
    assert (rf.rf_px, rf.radius_px, rf.bounded) == (7, 3, True)
    assert receptive_field_px(net, start_px=32) == 7


def test_strided_stack_probes_every_phase():
    torch.manual_seed(0)
    # conv3 s2 then conv3 (at stride 2) then x2 nearest upsampling: support 7 px, and the
    # odd output pixel sees one pixel further than the even one.
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(4, 3, 1),
    )
    one_phase = measure_receptive_field(net, start_px=32, phases=1)
    both = measure_receptive_field(net, start_px=32, phases=2)
    assert both.rf_px == 7
    assert both.radius_px >= one_phase.radius_px
    assert both.radius_px == 4


@pytest.mark.parametrize(("arch", "n_blocks"), [("resnet_6blocks", 6)])
def test_resnet_generator_support_matches_arithmetic(arch, n_blocks):
    # stem 7; two stride-2 3x3 convs +2 +4; 2 n_blocks 3x3 convs at stride 4 (+8 each);
    # 3x3 transposed convs at stride 4 and 2 (+4, +2); 7x7 head (+6)  ->  25 + 16 n_blocks
    rf = arch_receptive_field(arch)
    assert rf.bounded
    assert rf.rf_px == 25 + 16 * n_blocks
    assert rf.radius_px == (25 + 16 * n_blocks) // 2
    assert 0 < rf.effective_radius_px < rf.radius_px


def test_instance_norm_module_is_measured_with_fixed_stats():
    # with per-tile statistics the support would be the whole input
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.InstanceNorm2d(4), nn.Conv2d(4, 3, 3, padding=1)
    )
    rf = measure_receptive_field(net, start_px=32)
    assert rf.rf_px == 5 and rf.bounded


def test_attention_is_reported_unbounded():
    torch.manual_seed(0)
    g = build_generator("pyramid_pix2pix", ngf=2, attention=True)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    rf = measure_receptive_field(g, start_px=32)
    assert not rf.bounded
    assert rf.rf_px == 32
