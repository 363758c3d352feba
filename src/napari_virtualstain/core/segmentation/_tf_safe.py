"""TensorFlow only ever runs in a child process.

TensorFlow and Mesa's software OpenGL (llvmpipe, also radeonsi / iris on many Linux desktops)
each load their own LLVM. With a napari / vispy GL context and TensorFlow in one process, the
process segfaults or aborts at exit, whatever the import order. Preloading the system libLLVM
with ``RTLD_GLOBAL`` and importing TensorFlow with ``RTLD_DEEPBIND`` avoids it, but only on
Linux with one particular Mesa, and it breaks the moment another plugin imports TensorFlow first.

So this package never imports TensorFlow in the process that shows napari:

- StarDist's network runs as a torch port (``_stardist_net``) that reads the Keras weights;
  stardist's own NMS and ``polygons_to_label`` need no TensorFlow.
- The two things that need the real TensorFlow StarDist, downloading a pretrained model with
  ``StarDist2D.from_pretrained`` machinery and the reference prediction that checks the port,
  run here as ``python -m napari_virtualstain.core.segmentation._tf_safe ...`` in a child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_WORKER = "napari_virtualstain.core.segmentation._tf_safe"


def tensorflow_loaded() -> bool:
    """True if TensorFlow was imported into this process (it must not be next to napari)."""
    return "tensorflow" in sys.modules


def run_tf_worker(args: list[str], timeout_s: float = 600) -> str:
    """Run this module's worker ``main(args)`` in a fresh interpreter and return its stdout."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", _WORKER, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(
            f"TensorFlow worker {' '.join(args[:1])} failed (exit {proc.returncode}):\n{tail}"
        )
    return proc.stdout


def download_stardist_model(name: str, timeout_s: float = 600) -> Path:
    """Download a registered StarDist2D model (e.g. ``2D_versatile_he``); return its folder.

    Uses stardist's own download and cache (``~/.keras/models/StarDist2D``) in a child process.
    """
    try:
        out = run_tf_worker(["download", name], timeout_s=timeout_s)
    except RuntimeError as err:
        from ..models.registry import ModelDownloadError

        last = [ln for ln in str(err).splitlines() if ln.strip()][-1:] or [""]
        raise ModelDownloadError(
            f"could not download the StarDist model {name!r} (no internet?): pass a local "
            f"folder with config.json, thresholds.json and weights_best.h5 instead ({last[0]})"
        ) from err
    lines = [ln for ln in out.splitlines() if ln.startswith("MODEL_DIR=")]
    if not lines:
        raise RuntimeError(f"StarDist download of {name!r} printed no folder:\n{out[-2000:]}")
    return Path(lines[-1][len("MODEL_DIR=") :])


def predict_stardist_tf(
    model_dir: str | Path,
    image: np.ndarray,
    prob_thresh: float | None = None,
    nms_thresh: float | None = None,
    timeout_s: float = 600,
) -> dict[str, np.ndarray]:
    """The reference: TensorFlow StarDist2D on an already normalised float image, in a child.

    Returns ``prob``, ``dist`` (from ``predict``), ``labels`` (from ``predict_instances``
    with dense NMS, ``sparse=False``, the variant this package uses; stardist's sparse default
    picks its candidates slightly differently) and the seconds each took.
    """
    with tempfile.TemporaryDirectory(prefix="vs_tf_") as tmp:
        src, dst = Path(tmp) / "image.npy", Path(tmp) / "out.npz"
        np.save(src, np.asarray(image, np.float32))
        args = ["predict", str(Path(model_dir).resolve()), str(src), str(dst)]
        args += [repr(prob_thresh), repr(nms_thresh)]
        run_tf_worker(args, timeout_s=timeout_s)
        with np.load(dst) as data:
            return {key: data[key] for key in data.files}


# --- the child side: everything below imports TensorFlow and runs only under ``-m`` ---


def _worker_download(name: str) -> None:
    from csbdeep.models.pretrained import get_model_folder
    from stardist.models import StarDist2D

    print(f"MODEL_DIR={get_model_folder(StarDist2D, name)}")


def _worker_predict(model_dir: str, src: str, dst: str, prob: str, nms: str) -> None:
    from stardist.models import StarDist2D

    folder = Path(model_dir)
    model = StarDist2D(None, name=folder.name, basedir=str(folder.parent))
    image = np.load(src)
    model.predict(image[:64, :64], show_tile_progress=False)  # warm-up, kept out of the timing
    start = time.perf_counter()
    prob_map, dist_map = model.predict(image, show_tile_progress=False)
    seconds_predict = time.perf_counter() - start
    labels, _ = model.predict_instances(
        image,
        prob_thresh=None if prob == "None" else float(prob),
        nms_thresh=None if nms == "None" else float(nms),
        sparse=False,
        show_tile_progress=False,
    )
    seconds_total = time.perf_counter() - start
    np.savez(
        dst,
        prob=prob_map,
        dist=dist_map,
        labels=labels,
        seconds_predict=seconds_predict,
        seconds_predict_instances=seconds_total - seconds_predict,
    )


def main(argv: list[str]) -> None:
    """Entry point of the child process: ``download NAME`` or ``predict DIR IN OUT PROB NMS``."""
    commands = {"download": _worker_download, "predict": _worker_predict}
    if not argv or argv[0] not in commands:
        raise SystemExit(f"usage: python -m {_WORKER} download NAME | predict ...")
    commands[argv[0]](*argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
