"""The GPU path: tiles/s and end-to-end seconds on a tissue-masked synthetic 40x slide.

The slide (0.25 um/px, 40x; ``--side-px`` square, about 40 % tissue in blobs) is generated
lazily, as in ``bench_gui_latency.py``. ``stain_slide`` writes it to OME-Zarr with a ResNet-9
(junyanz layout, random weights; ``--model`` for a real one) at ``precision="auto"``. Printed:
tiles/s of the generator, end-to-end seconds, GPU utilisation sampled with NVML (pynvml)
or ``nvidia-smi`` where available, and the projection to a slide with 3.2 Gpx of tissue.

Without CUDA it says so and exits 0.

Run: ``python benchmarks/bench_gpu.py [--side-px 40000] [--model NAME]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TISSUE_GPX = 3.2


class UtilSampler:
    """GPU utilisation (%) every 0.5 s, from NVML or nvidia-smi (None when neither works)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:
            pass
        if shutil.which("nvidia-smi"):
            cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
            return lambda: float(
                subprocess.run(cmd, capture_output=True, text=True).stdout.split()[0]
            )
        return None

    def _run(self) -> None:
        read = self._read()
        while read is not None and not self._stop.wait(0.5):
            try:
                self.samples.append(read())
            except Exception:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def summary(self) -> str:
        if not self.samples:
            return "GPU utilisation: not available (no NVML / nvidia-smi)"
        s = np.asarray(self.samples)
        return f"GPU utilisation: mean {s.mean():.0f} %, p95 {np.percentile(s, 95):.0f} % ({len(s)} samples)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side-px", type=int, default=40_000)
    parser.add_argument("--model", default=None, help="registry name or path (default ResNet-9)")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); nothing to "
              "measure. Run it on a machine with an NVIDIA GPU.")  # fmt: skip
        return 0

    from bench_engine import resnet9
    from bench_gui_latency import synthetic_slide

    from napari_virtualstain.core.engine import stain_slide

    slide = synthetic_slide(args.side_px).with_mpp(0.25)  # Slide is immutable
    model = args.model or resnet9(0.25)
    name = torch.cuda.get_device_name(0)
    print(f"# GPU  {name}, torch {torch.__version__}; synthetic {args.side_px}x{args.side_px} "
          f"slide at 0.25 um/px; model {args.model or 'resnet_9blocks (random weights)'}")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    events: list[str] = []
    t0 = time.perf_counter()
    with UtilSampler() as util:
        result = stain_slide(slide, model, work / "out.zarr", device="cuda",
                             precision=args.precision, on_event=events.append)  # fmt: skip
    total_s = time.perf_counter() - t0
    tissue_tiles = result.tiles_total - result.tiles_background
    print(f"  {result.summary()}")
    print(f"  end-to-end {total_s:.1f} s; {result.tiles_inferred} tiles inferred, "
          f"{result.tiles_inferred / total_s:.1f} tiles/s end-to-end")  # fmt: skip
    print(f"  {util.summary()}")
    tile_px = (
        int(result.statement.split("tiles ")[1].split(" px")[0])
        if "tiles " in result.statement
        else 512
    )
    tissue_px = tissue_tiles * tile_px**2
    if tissue_px:
        projected = total_s * TISSUE_GPX * 1e9 / tissue_px
        print(f"  projection to {TISSUE_GPX} Gpx of tissue: {projected / 60:.1f} min "
              f"(this run stained {tissue_px / 1e9:.2f} Gpx of tissue tiles)")  # fmt: skip
    for e in events:
        print(f"  event: {e}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
