"""Fixed InstanceNorm statistics make tiled inference seamless (the seam test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from napari_virtualstain.core.models import (
    NormStats,
    build_generator,
    collect_norm_stats,
    fixed_norm_stats,
    infer_tiles,
)


def smooth_image(size_px: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random((size_px, size_px, 3)), (3, 3, 0))
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def stain_in_four_tiles(module, img, halo_px, precision):
    """Quadrants with ``halo_px`` of context on inner sides, centre-cropped and pasted."""
    size = img.shape[0]
    half = size // 2
    out = np.zeros_like(img)
    for ty in (0, half):
        for tx in (0, half):
            y0, y1 = max(ty - halo_px, 0), min(ty + half + halo_px, size)
            x0, x1 = max(tx - halo_px, 0), min(tx + half + halo_px, size)
            tile = infer_tiles(module, img[None, y0:y1, x0:x1], precision=precision)[0]
            out[ty : ty + half, tx : tx + half] = tile[
                ty - y0 : ty - y0 + half, tx - x0 : tx - x0 + half
            ]
    return out


# Halos from the receptive-field radius worked out by hand (kernel and stride arithmetic,
# independent of the measurement code): paper 361 px -> radius 180; resnet_9blocks
# 169 px -> radius 84. Rounded up to the network stride (8 and 4) so tiles stay aligned.
CASES = [("paper", 184, "fp32"), ("resnet_9blocks", 84, "bf16")]


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "halo_px", "precision"), CASES)
def test_four_tiles_equal_the_whole_image_with_fixed_stats(arch, halo_px, precision):
    torch.manual_seed(0)
    module = build_generator(arch, ngf=2, **({} if arch == "paper" else {"init": "xavier"}))
    img = smooth_image(1024)
    stats = collect_norm_stats(module, img[None, ::4, ::4].copy())  # a thumbnail pass
    with fixed_norm_stats(module, stats):
        whole = infer_tiles(module, img[None], precision=precision)[0].astype(int)
        tiled = stain_in_four_tiles(module, img, halo_px, precision).astype(int)
    diff = np.abs(whole - tiled)
    assert diff.max() <= 1  # one grey level of rounding
    assert diff.mean() < 0.01
    if arch == "paper":
        # per-tile statistics (the default) do show seams: the top-left tile alone differs
        end = 512 + halo_px
        tile = infer_tiles(module, img[None, :end, :end])[0, :512, :512].astype(int)
        per_tile = np.abs(tile - infer_tiles(module, img[None])[0, :512, :512])
        assert per_tile.max() > 3


def test_fixed_stats_make_a_tile_independent_of_its_batch():
    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=4, init="xavier")
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    stats = collect_norm_stats(module, tiles)
    with fixed_norm_stats(module, stats):
        alone = infer_tiles(module, tiles[:1])
        dark = infer_tiles(module, (tiles[:1] // 4))
        in_batch = infer_tiles(module, tiles, batch_size=3)[:1]
    np.testing.assert_array_equal(alone, in_batch)
    # without them, instance norm hides a global brightness change; with them it shows
    assert np.abs(alone.astype(int) - dark).mean() > 1
    # and the module is restored afterwards
    assert "forward" not in vars(module.model[2])


def test_stats_sha256_save_and_load(tmp_path):
    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=2)
    tiles = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    stats = collect_norm_stats(module, tiles)
    assert len(stats.mean) == 2 * 6 + 5  # every InstanceNorm layer
    assert stats.n_tiles == 2
    other = collect_norm_stats(module, tiles[:1])
    assert stats.sha256() != other.sha256()
    stats.save(tmp_path / "stats.safetensors")
    back = NormStats.load(tmp_path / "stats.safetensors")
    assert back.sha256() == stats.sha256() and back.n_tiles == 2


def test_pooled_moments_are_the_layer_input_moments():
    torch.manual_seed(0)
    module = build_generator("resnet_6blocks", ngf=2)
    tiles = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    stats = collect_norm_stats(module, tiles)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        first = module.model[1](module.model[0](x))  # input of the first norm layer
    np.testing.assert_allclose(
        stats.mean["model.2"], first.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        stats.var["model.2"], first.var(dim=(0, 2, 3), unbiased=False), rtol=1e-4, atol=1e-6
    )
    chunked = collect_norm_stats(module, tiles, batch_size=1)
    np.testing.assert_allclose(chunked.mean["model.2"], stats.mean["model.2"], rtol=1e-4, atol=1e-6)


def test_stats_of_another_model_are_refused():
    a = build_generator("resnet_6blocks", ngf=2)
    b = build_generator("resnet_6blocks", ngf=4)
    tiles = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="channels"):
        with fixed_norm_stats(b, collect_norm_stats(a, tiles)):
            pass
    with pytest.raises(ValueError, match="do not match the model"):
        with fixed_norm_stats(
            build_generator("resnet_9blocks", ngf=2), collect_norm_stats(a, tiles)
        ):
            pass
    with pytest.raises(ValueError, match="no InstanceNorm"):
        collect_norm_stats(build_generator("unet_128", ngf=2), np.zeros((1, 128, 128, 3), np.uint8))


@pytest.mark.parametrize("arch", ["resnet_9blocks", "unet_128", "paper"])
def test_folded_norms_give_the_fixed_stats_output(arch):
    """Folding each fixed InstanceNorm into its conv changes no output pixel (beyond 1 grey)."""
    from napari_virtualstain.core.models.normstats import folded_norm_stats, instance_norms

    torch.manual_seed(0)
    kwargs = {} if arch == "paper" else {"init": "xavier", "norm": "instance"}
    module = build_generator(arch, ngf=4, **kwargs).eval()
    img = smooth_image(128)
    stats = collect_norm_stats(module, img[None])
    folded = folded_norm_stats(module, stats)
    assert len(instance_norms(folded)) < len(instance_norms(module))  # folded, not only patched
    assert len(instance_norms(module)) == len(stats.mean)  # the caller's module is untouched
    with fixed_norm_stats(module, stats):
        fixed = infer_tiles(module, img[None]).astype(int)
    diff = np.abs(infer_tiles(folded, img[None]).astype(int) - fixed)
    assert diff.max() <= 1


def test_folding_refuses_another_models_statistics():
    from napari_virtualstain.core.models.normstats import folded_norm_stats

    torch.manual_seed(0)
    a = build_generator("resnet_6blocks", ngf=4)
    b = build_generator("resnet_6blocks", ngf=8)
    stats = collect_norm_stats(a, smooth_image(64)[None])
    with pytest.raises(ValueError, match="channels"):
        folded_norm_stats(b, stats)
