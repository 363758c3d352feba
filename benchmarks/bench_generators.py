"""Generator throughput: the junyanz ``test.py`` way vs our fastest inference mode.

For each architecture at its native tile size:

- baseline: fp32, batch 1, ``torch.no_grad``, per-tile numpy <-> tensor conversion as in
  junyanz ``test.py`` + ``util.tensor2im``;
- fast: ``infer_tiles`` with the device's best autocast precision (bf16 on CPU), inference
  mode, and optionally ``torch.compile`` (``--compile``; ~18 s per shape on CPU).

Both run in the same process on the same tiles, interleaved, best of 3 runs; the ratio is
fast / baseline tiles/s. The fast output's mean difference from fp32 (grey levels) is printed
as well. The attention variant of pyramid pix2pix times a single tile, once, on the CPU (about
a minute each). Runs on every device present (CPU, and CUDA / MPS when available).

    python benchmarks/bench_generators.py [--tiles 4] [--archs paper resnet_9blocks] [--compile]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_virtualstain.core.models import (
    architecture,
    best_precision,
    build_generator,
    infer_tiles,
)

ARCHS = {
    "paper": {},
    "resnet_9blocks": {},
    "resnet_6blocks": {},
    "unet_256": {},
    "unet_128": {},
    "pyramid_pix2pix": {"attention": True},
}


def junyanz_way(module, tiles: np.ndarray, device) -> np.ndarray:
    """One tile at a time, fp32, like junyanz test.py (``model.test()`` + ``tensor2im``).

    Returns the float images too (``tensor2im`` truncates; the precision delta is taken
    against the rounded floats, as ``infer_tiles`` rounds).
    """
    out = []
    for tile in tiles:
        x = torch.from_numpy(tile).permute(2, 0, 1).float().div(255.0)
        x = ((x - 0.5) / 0.5).unsqueeze(0).to(device)  # transforms.Normalize((0.5,) * 3, ...)
        with torch.no_grad():
            y = module(x)
        out.append((np.transpose(y[0].cpu().float().numpy(), (1, 2, 0)) + 1) / 2.0 * 255.0)
    floats = np.stack(out)
    return floats.astype(np.uint8), floats


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_pair(base_fn, fast_fn, n_tiles: int, device, repeats: int):
    """Best tiles/s of each function over ``repeats`` interleaved runs, after a warm-up.

    Interleaving and best-of keep the ratio meaningful on a machine shared with other jobs:
    a load spike hits one run, not one mode.
    """
    base_fn(), fast_fn()  # warm-up: allocator, oneDNN primitives, compilation
    best = [0.0, 0.0]
    results = [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((base_fn, fast_fn)):
            _sync(device)
            start = time.perf_counter()
            results[i] = fn()
            _sync(device)
            best[i] = max(best[i], n_tiles / (time.perf_counter() - start))
    return best, results


def bench(arch: str, device, n_tiles: int, compile_: bool) -> dict:
    torch.manual_seed(0)
    module = build_generator(arch, **ARCHS[arch]).to(device).eval()
    if arch == "pyramid_pix2pix":
        with torch.no_grad():  # open the attention gates (0 at init) so attention counts
            for name, p in module.named_parameters():
                if name.endswith("gamma"):
                    p.fill_(0.1)
        if device.type == "cpu":
            n_tiles = 1  # four global attention layers, one at 256² (65536 pixels)
    size = architecture(arch).native_tile_px
    tiles = np.random.default_rng(0).integers(0, 256, (n_tiles, size, size, 3), dtype=np.uint8)
    precision = best_precision(device)
    repeats = 1 if n_tiles == 1 else 3
    (base, fast), ((_, floats), out) = timed_pair(
        lambda: junyanz_way(module, tiles, device),
        lambda: infer_tiles(module, tiles, device, precision, batch_size=1, compile=compile_),
        n_tiles,
        device,
        repeats,
    )
    reference = np.clip(np.round(floats), 0, 255)
    return {
        "arch": arch,
        "tile_px": size,
        "n_tiles": n_tiles,
        "device": device.type,
        "precision": precision + ("+compile" if compile_ else ""),
        "base_tiles_s": base,
        "fast_tiles_s": fast,
        "ratio": fast / base,
        "mean_diff": float(np.abs(reference - out).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=4, help="tiles timed per mode")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--compile", action="store_true", help="add torch.compile to fast mode")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append(torch.device("mps"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.tiles} tiles")
    header = f"{'arch':<16}{'tile':>6}{'n':>3} {'device':<7}{'fast mode':<14}"
    header += f"{'junyanz t/s':>12}{'fast t/s':>10}{'ratio':>8}{'Δ fp32':>8}"
    print(header)
    for device in devices:
        for arch in args.archs:
            r = bench(arch, device, args.tiles, args.compile)
            print(
                f"{r['arch']:<16}{r['tile_px']:>6}{r['n_tiles']:>3} {r['device']:<7}{r['precision']:<14}"
                f"{r['base_tiles_s']:>12.2f}{r['fast_tiles_s']:>10.2f}{r['ratio']:>7.2f}x"
                f"{r['mean_diff']:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
