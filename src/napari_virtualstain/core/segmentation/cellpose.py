"""Cellpose 3.1.x nuclei segmentation (``nuclei`` / ``cyto3`` or a local model file).

Cellpose 3 is torch only (no TensorFlow, so no clash with napari's OpenGL). Cellpose 4 is not
supported: it needs torchvision and its only model, ``cpsam``, is 1.2 GB and slow on CPU.

Brightfield input: the region becomes grey (mean of R, G, B), is normalised between two grey
levels (per-region percentiles, or a fixed ``norm_range`` shared by all blocks of an ROI) and
inverted, so that dark nuclei are bright as in the fluorescence images Cellpose mostly saw.
The nucleus diameter is given in µm and converted to pixels with the region's mpp; Cellpose
then rescales the image so nuclei have the model's ``diam_mean`` (17 px for ``nuclei``).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checks import check_fields
from ..progress import Progress
from ._intensity import (
    check_normalisation,
    check_rgb,
    robust_range,
    sequential_labels,
)
from .base import LoadOnUseSegmenter

#: Smallest region side (px) worth running; below it no nucleus fits and Cellpose's tiling fails.
MIN_SIDE_PX = 8


@dataclass(frozen=True)
class CellposeConfig:
    """Options of :class:`CellposeSegmenter`.

    Attributes
    ----------
    model : str or Path
        A Cellpose 3 model file (``CellposeModel(pretrained_model=path)``) or a built-in name
        (``nuclei``, ``cyto3``...), downloaded once by Cellpose to ``~/.cellpose/models``.
    diameter_um : float
        Typical nucleus diameter in µm (8 µm suits most tumour nuclei at 20-40x).
    flow_threshold, cellprob_threshold : float
        Cellpose's own thresholds (defaults 0.4 and 0.0).
    min_area_um2 : float
        Masks smaller than this are dropped (Cellpose's ``min_size``, converted to pixels).
    invert : bool
        Invert grey levels so nuclei are bright (True for brightfield H&E / IHC).
    norm_percentiles : (float, float)
        Percentiles of the region mapped to 0 and 1 (Cellpose's default 1, 99).
    norm_range : (float, float) or None
        Fixed grey levels for 0 and 1 instead of percentiles, e.g. the whole ROI's.
    min_contrast : float
        Regions whose percentile spread (grey levels) is below this are background.
    max_nucleus_diameter_um : float
        Largest nucleus expected; ``segment_in_blocks`` sizes its overlap from it.
    device : str
        "auto" (GPU when Cellpose finds one), "cpu", "cuda"...
    batch_size : int
        Network tiles (224 px) per batch.
    """

    model: str | Path = "nuclei"
    diameter_um: float = 8.0
    flow_threshold: float = 0.4
    cellprob_threshold: float = 0.0
    min_area_um2: float = 10.0
    invert: bool = True
    norm_percentiles: tuple[float, float] = (1.0, 99.0)
    norm_range: tuple[float, float] | None = None
    min_contrast: float = 20.0
    max_nucleus_diameter_um: float = 25.0
    device: str = "auto"
    batch_size: int = 8

    def __post_init__(self) -> None:
        check_fields(self, ("diameter_um", "max_nucleus_diameter_um", "batch_size"), "> 0")
        if self.min_area_um2 < 0 or self.flow_threshold < 0:
            raise ValueError("min_area_um2 and flow_threshold must be >= 0")
        check_normalisation(self.norm_percentiles, self.norm_range)


class CellposeSegmenter(LoadOnUseSegmenter):
    """Cellpose 3 behind the ``Segmenter`` protocol; the model loads on first use."""

    name = "cellpose"
    config_class = CellposeConfig

    def _load_model(self):
        """The ``cellpose.models.CellposeModel`` (downloaded first for a built-in name)."""
        return _load_cellpose_model(self.config.model, self.config.device)

    @property
    def diam_mean_px(self) -> float:
        """The nucleus diameter (px) the network was trained at, read from the model."""
        return float(self.load().diam_mean)

    def eval_options(self, mpp: float) -> dict:
        """Cellpose ``eval`` arguments that depend on the pixel size (µm turned into px)."""
        cfg = self.config
        return {
            "diameter": cfg.diameter_um / mpp,
            "min_size": int(round(cfg.min_area_um2 / mpp**2)),
            "flow_threshold": cfg.flow_threshold,
            "cellprob_threshold": cfg.cellprob_threshold,
        }

    def iter_segment(self, rgb: np.ndarray, mpp: float) -> Generator[Progress, None, np.ndarray]:
        """Yield ``Progress`` before the network runs, return the labels.

        Cellpose runs its tiles and flow dynamics in one call, so cancelling takes effect
        only before or after it.
        """
        rgb = check_rgb(rgb, mpp)
        shape = rgb.shape[:2]
        gray = rgb.astype(np.float32).mean(axis=2)
        value_range = self.config.norm_range or robust_range(
            gray, self.config.norm_percentiles, self.config.min_contrast
        )
        if min(shape) < MIN_SIDE_PX or value_range is None:
            return np.zeros(shape, np.uint32)
        low, high = value_range
        image = (gray - low) / (high - low)
        if self.config.invert:
            image = 1.0 - image
        model = self.load()
        yield Progress(0, 1, "Cellpose network and flows")
        masks, _flows, _styles = model.eval(
            image,
            channels=[0, 0],
            # A dict, not False: Cellpose 3.1 writes a bool into its module-level defaults.
            normalize={"normalize": False},
            batch_size=self.config.batch_size,
            **self.eval_options(mpp),
        )
        yield Progress(1, 1, "Cellpose done")
        return sequential_labels(masks)


def _load_cellpose_model(model: str | Path, device: str):
    import torch
    from cellpose import models

    gpu = device != "cpu" and (device != "auto" or torch.cuda.is_available())
    kwargs = {"gpu": gpu}
    if device not in ("auto", "cpu"):
        kwargs["device"] = torch.device(device)
    path = Path(model).expanduser()
    if path.is_dir():
        path = _model_file_in(path)
    if path.is_file():
        try:
            return models.CellposeModel(pretrained_model=str(path), **kwargs)
        except Exception as err:
            clear = _file_error(path, err)
            if clear is None:
                raise
            raise clear from err
    name = str(model)
    # Cellpose falls back to cyto3 without an error for unknown names and missing files.
    if name not in models.MODEL_NAMES:
        if path.suffix or "/" in name or "\\" in name or name.startswith((".", "~")):
            raise FileNotFoundError(f"Cellpose model file not found: {path}")
        raise ValueError(f"unknown Cellpose model {name!r}: pass a file or one of nuclei, cyto3")
    try:
        return models.CellposeModel(model_type=name, **kwargs)
    except OSError as err:  # URLError, name resolution, read-only cache...
        from ..models.registry import ModelDownloadError

        raise ModelDownloadError(
            f"could not download the Cellpose model {name!r} (no internet?): pass a local "
            f"Cellpose 3 model file instead ({str(err).splitlines()[0] if str(err) else err!r})"
        ) from err


def _model_file_in(folder: Path) -> Path:
    """The one model file of ``folder`` (``--model-dir`` may name the folder that holds it)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if len(files) != 1:
        names = ", ".join(p.name for p in files[:5]) or "none"
        raise ValueError(
            f"{folder} is a folder; a Cellpose model is one file: give the file itself "
            f"(files there: {names})"
        )
    return files[0]


def _file_error(path: Path, err: Exception) -> Exception | None:
    """One line for a model file Cellpose could not load: corrupt, code, or not Cellpose's.

    None when the file is a readable checkpoint and the error is something else (a device...).
    """
    import torch

    from ..models.checkpoints import CheckpointError, pth_load_error

    if isinstance(err, PermissionError):
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as load_err:  # noqa: BLE001 - not a readable tensor file
        return pth_load_error(path, load_err)
    if isinstance(err, KeyError) or (isinstance(err, RuntimeError) and "state_dict" in str(err)):
        return CheckpointError(f"{path} is a PyTorch checkpoint but not a Cellpose 3 model")
    return None
