"""Seconds to segment a 2k x 2k ROI on CPU with each nuclei backend, as ratios in one run.

No pretrained StarDist or Cellpose weights can be had offline, so the networks are the real
architectures with weights made here: StarDist's ``2D_versatile_he`` U-Net with the disc-detecting
weights of ``tests/core/_stardist_models.py`` (so NMS has a realistic number of candidates) and
Cellpose 3's ``nuclei`` network with random weights (its flow dynamics then do untypical work:
treat that figure as indicative). The baseline is the built-in watershed on the same ROI; the
torch port of StarDist is also compared with TensorFlow StarDist on the same weights and image
(run in a child process, as TensorFlow must never share a process with napari).

Run: ``.venv/bin/python benchmarks/bench_nuclei_backends.py [--size 2048] [--mpp 0.25]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _helper():
    path = ROOT / "tests" / "core" / "_stardist_models.py"
    spec = importlib.util.spec_from_file_location("_stardist_models_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_roi(size: int, mpp: float, seed: int = 0) -> np.ndarray:
    """Pink stroma with ~1 nucleus (radius 3.5 µm) per 150 µm² on a jittered grid."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float32)
    img[:] = (225, 175, 205)
    radius = 3.5 / mpp
    step = int(np.sqrt(150.0) / mpp)
    yy, xx = np.mgrid[-int(radius) - 1 : int(radius) + 2, -int(radius) - 1 : int(radius) + 2]
    disc = yy**2 + xx**2 <= radius**2
    r = disc.shape[0] // 2
    for cy in range(step // 2, size - r - 1, step):
        for cx in range(step // 2, size - r - 1, step):
            y, x = (
                cy + rng.integers(-step // 4, step // 4),
                cx + rng.integers(-step // 4, step // 4),
            )
            if r <= y < size - r and r <= x < size - r:
                img[y - r : y + r + 1, x - r : x + r + 1][disc] = (75, 45, 115)
    img += rng.normal(0, 4, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def timed(fn, *args, repeat: int = 1):
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--mpp", type=float, default=0.25)
    parser.add_argument("--no-tf", action="store_true", help="skip the TensorFlow reference")
    args = parser.parse_args()

    import torch

    from napari_virtualstain.core.segmentation import BuiltinSegmenter
    from napari_virtualstain.core.segmentation.cellpose import CellposeSegmenter
    from napari_virtualstain.core.segmentation.stardist import StarDistSegmenter, normalize

    print(
        f"ROI {args.size} x {args.size} px at {args.mpp} µm/px; torch threads "
        f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}"
    )
    rgb = synthetic_roi(args.size, args.mpp)
    tmp = Path(tempfile.mkdtemp(prefix="bench_nuclei_"))
    results = {}

    t, labels = timed(BuiltinSegmenter().segment, rgb, args.mpp)
    results["builtin"] = t
    print(f"builtin watershed        {t:7.2f} s  {labels.max():6d} nuclei")

    stardist = StarDistSegmenter(model=_helper().write_disc_model(tmp / "sd", radius_px=7.0))
    stardist.load()
    t, labels = timed(stardist.segment, rgb, args.mpp)
    results["stardist"] = t
    print(f"StarDist (torch port)    {t:7.2f} s  {labels.max():6d} nuclei")

    cp_path = tmp / "cellpose_nuclei_random"
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    CPnet([2, 32, 64, 128, 256], 3, sz=3, mkldnn=False, diam_mean=17.0).save_model(str(cp_path))
    cellpose = CellposeSegmenter(model=cp_path, device="cpu")
    cellpose.load()
    t, labels = timed(cellpose.segment, rgb, args.mpp)
    results["cellpose"] = t
    print(f"Cellpose 3 (random init) {t:7.2f} s  {labels.max():6d} masks")

    for name in ("stardist", "cellpose"):
        print(f"ratio {name} / builtin: {results[name] / results['builtin']:.2f}")

    if not args.no_tf:
        from napari_virtualstain.core.segmentation._tf_safe import predict_stardist_tf
        from napari_virtualstain.core.segmentation.stardist import _resample

        image = _resample(normalize(rgb, (40.0, 240.0)), args.mpp / 0.5)
        t_torch, _ = timed(stardist.predict, image)
        ref = predict_stardist_tf(tmp / "sd", image)
        t_tf = float(ref["seconds_predict"])
        print(
            f"StarDist network on {image.shape[0]}x{image.shape[1]} model px: torch "
            f"{t_torch:.2f} s, TensorFlow {t_tf:.2f} s, ratio torch / TF {t_torch / t_tf:.2f}"
        )
        print(
            f"TensorFlow predict_instances (network + NMS): "
            f"{float(ref['seconds_predict_instances']):.2f} s"
        )


if __name__ == "__main__":
    main()
