"""Shapes, parameter counts and FLOPs of every generator; the PatchGAN; the pyramid operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from napari_virtualstain.core.models import (
    ARCHITECTURES,
    GENERATOR_ARCHS,
    ModelCard,
    SelfAttention,
    architecture,
    build_discriminator,
    build_generator,
    gaussian_pyramid,
)

ARCHS = [
    ("paper", {}),
    ("paper", {"skip": False}),
    ("resnet_9blocks", {}),
    ("resnet_6blocks", {}),
    ("unet_256", {}),
    ("unet_128", {}),
    ("pyramid_pix2pix", {"attention": True}),
    ("pyramid_pix2pix", {"attention": False}),
]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_generator(arch: str, **kwargs) -> nn.Module:
    # Meta tensors carry shapes only: full-width networks cost no memory or time.
    with torch.device("meta"):
        return build_generator(arch, **kwargs)


def conv_flops_by_hooks(module: nn.Module, x: torch.Tensor) -> int:
    """Independent FLOP count: 2 * MACs of every (transposed) convolution, from shapes."""
    total = 0

    def hook(m, inputs, output):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        if isinstance(m, nn.ConvTranspose2d):
            # each input pixel scatters into k*k outputs for every output channel
            total += 2 * inputs[0][0, 0].numel() * k * m.out_channels
        else:
            total += 2 * output[0, 0].numel() * k * m.out_channels

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    module(x)
    for h in handles:
        h.remove()
    return total


def test_paper_generator_is_about_50m_parameters():
    g = meta_generator("paper")
    assert 49e6 < n_params(g) < 51e6
    # skips add features, not weights: the ablation baseline has the same size
    assert n_params(meta_generator("paper", skip=False)) == n_params(g)
    # ten residual blocks at the 36x36 bottleneck with 8 * ngf channels
    assert len(g.blocks) == 10
    assert g.blocks[0].conv_block[1].in_channels == 512


def test_resnet_9blocks_is_11_38m_parameters():
    assert round(n_params(meta_generator("resnet_9blocks")) / 1e6, 2) == 11.38


def test_junyanz_parameter_counts_follow_the_layout():
    # A residual block at 256 channels has 2 * (256*256*9 + 256) parameters (bias: instance).
    block = 2 * (256 * 256 * 9 + 256)
    diff = n_params(meta_generator("resnet_9blocks")) - n_params(meta_generator("resnet_6blocks"))
    assert diff == 3 * block
    assert n_params(meta_generator("unet_256")) > n_params(meta_generator("unet_128"))


def test_resnet_9blocks_flops_per_256_tile():
    g = meta_generator("resnet_9blocks")
    x = torch.zeros(1, 3, 256, 256, device="meta")
    with FlopCounterMode(display=False) as counter:
        g(x)
    flops = counter.get_total_flops()
    assert round(flops / 1e9, 1) == 99.1
    assert flops == conv_flops_by_hooks(g, x)


def test_paper_generator_flops_per_288_tile():
    g = meta_generator("paper")
    x = torch.zeros(1, 3, 288, 288, device="meta")
    with FlopCounterMode(display=False) as counter:
        g(x)
    # conv FLOPs from shapes, plus the skip additions are not counted by either
    assert counter.get_total_flops() == conv_flops_by_hooks(g, x)
    assert 140e9 < counter.get_total_flops() < 148e9


@pytest.mark.parametrize(("arch", "kwargs"), ARCHS)
def test_output_shape_equals_input_shape(arch, kwargs):
    size = {"paper": 288, "unet_256": 256, "unet_128": 128}.get(arch, 64)
    torch.manual_seed(0)
    g = build_generator(arch, ngf=4, **kwargs)
    with torch.no_grad():
        y = g(torch.rand(1, 3, size, size) * 2 - 1)
    assert y.shape == (1, 3, size, size)
    assert y.abs().max() <= 1.0  # tanh


def test_paper_generator_downsamples_288_to_36_without_pooling():
    g = build_generator("paper", ngf=4)
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(o.shape[-1])) for m in g.down]
    with torch.no_grad():
        g(torch.zeros(1, 3, 288, 288))
    for h in hooks:
        h.remove()
    assert shapes == [144, 72, 36]
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in g.modules())
    assert all(isinstance(m[2], nn.LeakyReLU) for m in g.down)
    assert all(isinstance(m[0], nn.ConvTranspose2d) and m[0].stride == (2, 2) for m in g.up)


def test_paper_skip_switch_changes_the_output():
    torch.manual_seed(0)
    with_skip = build_generator("paper", ngf=4)
    without = build_generator("paper", ngf=4, skip=False)
    without.load_state_dict(with_skip.state_dict())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert (with_skip(x) - without(x)).abs().max() > 1e-2


def test_paper_generator_uses_xavier_initialisation():
    torch.manual_seed(0)
    conv = build_generator("paper", ngf=16).blocks[0].conv_block[1]
    fan_in = fan_out = 128 * 9
    expected_std = (2.0 / (fan_in + fan_out)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0


def test_pyramid_attention_after_each_down_and_up_step():
    g = build_generator("pyramid_pix2pix", ngf=4, attention=True)
    layers = list(g.model)
    positions = [i for i, m in enumerate(layers) if isinstance(m, SelfAttention)]
    assert len(positions) == 4
    for i in positions:
        assert isinstance(layers[i - 1], nn.ReLU)
        assert isinstance(layers[i - 3], (nn.Conv2d, nn.ConvTranspose2d))
        assert layers[i - 3].stride == (2, 2)
    assert not any(
        isinstance(m, SelfAttention)
        for m in build_generator("pyramid_pix2pix", ngf=4, attention=False).modules()
    )
    lighter = build_generator("pyramid_pix2pix", ngf=4, full_res_attention=False)
    assert sum(isinstance(m, SelfAttention) for m in lighter.modules()) == 3


def test_self_attention_is_softmax_qk_v():
    torch.manual_seed(0)
    att = SelfAttention(16)
    with torch.no_grad():
        att.gamma.fill_(0.7)
        x = torch.randn(2, 16, 5, 6)
        q = att.query(x).flatten(2).transpose(1, 2)
        k = att.key(x).flatten(2)
        v = att.value(x).flatten(2).transpose(1, 2)
        weights = torch.softmax(q @ k / q.shape[-1] ** 0.5, dim=-1)
        expected = x + 0.7 * (weights @ v).transpose(1, 2).reshape(x.shape)
        assert torch.allclose(att(x), expected, atol=1e-5)
        # the query-blocked evaluation gives the same result
        from napari_virtualstain.core.models.pyramid import chunked_attention

        q, kt = att.query(x).flatten(2).transpose(1, 2), att.key(x).flatten(2).transpose(1, 2)
        blocked = chunked_attention(q, kt, v, q.shape[-1] ** -0.5, chunk=7)
        assert torch.allclose(blocked, weights @ v, atol=1e-5)


def test_patchgan_has_70px_patches_and_junyanz_layout():
    d = build_discriminator(input_nc=6, ndf=8, n_layers=3)
    with torch.no_grad():
        y = d(torch.zeros(2, 6, 256, 256))
    assert y.shape == (2, 1, 30, 30)
    convs = [m for m in d.model if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert {k.split(".")[1] for k in d.state_dict()} == {"0", "2", "5", "8", "11"}


def test_gaussian_pyramid_matches_scipy():
    from scipy.ndimage import correlate1d

    rng = np.random.default_rng(0)
    img = rng.random((2, 3, 32, 40))
    levels = gaussian_pyramid(torch.from_numpy(img), 3)
    assert [tuple(level.shape[-2:]) for level in levels] == [(32, 40), (16, 20), (8, 10)]
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / 2)
    g /= g.sum()
    expected = img
    for _ in range(2):
        for _ in range(4):  # BCI: four 3x3 sigma-1 blurs per octave; 'mirror' = torch reflect
            expected = correlate1d(
                correlate1d(expected, g, axis=2, mode="mirror"), g, axis=3, mode="mirror"
            )
        expected = expected[..., ::2, ::2]
    np.testing.assert_allclose(levels[2].numpy(), expected, atol=1e-10)


def test_gaussian_pyramid_rejects_bad_input():
    with pytest.raises(ValueError, match="NCHW"):
        gaussian_pyramid(torch.zeros(3, 8, 8), 2)
    with pytest.raises(ValueError, match="too small"):
        gaussian_pyramid(torch.zeros(1, 3, 2, 2), 4)


def test_unknown_arch_and_kwargs_are_clear_errors():
    with pytest.raises(ValueError, match="unknown generator arch"):
        build_generator("resnet_12blocks")
    with pytest.raises(ValueError, match="bad keyword"):
        build_generator("resnet_9blocks", attention=True)
    with pytest.raises(ValueError, match="norm must be one of"):
        build_generator("unet_128", norm="group")


@pytest.mark.parametrize("arch", GENERATOR_ARCHS)
def test_the_architecture_table_is_what_the_networks_do(arch):
    """Each row's stride is real: multiples of it come back whole, a half-stride offset does not."""
    spec = architecture(arch)
    torch.manual_seed(0)
    # Attention changes no shape, and at 256 px (N = 16384 pixels per map) it took 34 of
    # this test's 35 s: the stride is checked on the same network without it.
    g = build_generator(arch, ngf=2, **({"attention": False} if spec.family == "pyramid" else {}))
    side = spec.native_tile_px
    with torch.no_grad():
        assert g(torch.zeros(1, 3, side, side)).shape[-2:] == (side, side)
        odd = side + spec.stride_px // 2
        try:
            shape = g(torch.zeros(1, 3, odd, odd)).shape[-2:]
        except RuntimeError:  # a skip connection cannot concatenate mismatched sizes
            shape = None
    assert shape != (odd, odd)
    fixed = next(iter(spec.fixed_kwargs), None)
    if fixed is not None:
        with pytest.raises(ValueError, match="fixed by its name"):
            build_generator(arch, **{fixed: 3})
    assert ModelCard(name="m", arch=arch).arch == arch  # cards accept every row, and only those
    assert set(GENERATOR_ARCHS) == set(ARCHITECTURES)
