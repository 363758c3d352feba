"""StarDist2D nuclei segmentation (``2D_versatile_he`` or any StarDist2D model folder).

The network runs as a torch port of StarDist's U-Net that reads the model's Keras
``weights_best.h5`` (see ``_stardist_net``); stardist's own non-maximum suppression and
``polygons_to_label`` turn its output into labels. TensorFlow is never imported in this process:
next to napari's OpenGL it crashes (see ``_tf_safe``). Downloading a pretrained model uses
stardist's own code in a child process.

Pixel size: ``2D_versatile_he`` was trained on 40x H&E crops (MoNuSeg 2018, TNBC) and is known
to work best at about 0.5 µm/px (QuPath's StarDist documentation and common QuPath scripts
run its H&E model at ``pixelSize(0.5)``). That is an assumption, not a published property of the model:
``model_mpp`` sets it. Regions are resampled from their ``mpp`` to ``model_mpp``, and the star
polygons are scaled back and drawn at the input resolution.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geometry import Box, TileGrid, round_up
from ..progress import Progress, drain
from ._intensity import (
    check_normalisation,
    check_rgb,
    robust_range,
    sequential_labels,
)
from .base import LoadOnUseSegmenter

#: Models stardist registers for ``StarDist2D.from_pretrained`` (downloaded on first use).
PRETRAINED = ("2D_versatile_he", "2D_versatile_fluo", "2D_paper_dsb2018", "2D_demo")
WEIGHT_FILES = ("weights_best.h5", "weights_last.h5")
# StarDist's own defaults when a folder has no thresholds.json.
_DEFAULT_THRESHOLDS = {"prob": 0.5, "nms": 0.4}


@dataclass(frozen=True)
class StarDistConfig:
    """Options of :class:`StarDistSegmenter`.

    Attributes
    ----------
    model : str or Path
        A StarDist2D folder (``config.json``, ``thresholds.json``, ``weights_best.h5``) or a
        registered name (``2D_versatile_he``), downloaded once by stardist.
    model_mpp : float
        Pixel size (µm/px) the model expects; regions are resampled to it.
    prob_thresh, nms_thresh : float or None
        Detection and overlap thresholds; None reads the folder's ``thresholds.json``.
    tile_px : int
        Network tile size at ``model_mpp`` (without the halo); bounds memory.
    norm_percentiles : (float, float)
        Percentile normalisation of the region, as StarDist's H&E model was trained with.
    norm_range : (float, float) or None
        Fixed grey levels for 0 and 1 instead of per-region percentiles; pass the whole
        ROI's range when segmenting it in blocks so that every block is normalised alike.
    min_contrast : float
        Regions whose percentile spread (grey levels, 0-255) is below this are background.
    max_nucleus_diameter_um : float
        Largest nucleus expected; ``segment_in_blocks`` sizes its overlap from it.
    device : str
        "auto" (CUDA when present), "cpu", "cuda", "cuda:1"...
    """

    model: str | Path = "2D_versatile_he"
    model_mpp: float = 0.5
    prob_thresh: float | None = None
    nms_thresh: float | None = None
    tile_px: int = 1024
    norm_percentiles: tuple[float, float] = (1.0, 99.8)
    norm_range: tuple[float, float] | None = None
    min_contrast: float = 20.0
    max_nucleus_diameter_um: float = 25.0
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.model_mpp > 0 or not self.max_nucleus_diameter_um > 0:
            raise ValueError("model_mpp and max_nucleus_diameter_um must be > 0")
        for name in ("prob_thresh", "nms_thresh"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.tile_px < 64:
            raise ValueError(f"tile_px must be >= 64, got {self.tile_px}")
        check_normalisation(self.norm_percentiles, self.norm_range)


class StarDistSegmenter(LoadOnUseSegmenter):
    """StarDist2D behind the ``Segmenter`` protocol; the model loads on first use."""

    name = "stardist"
    config_class = StarDistConfig

    # -- model ---------------------------------------------------------------------------

    def _load_model(self):
        """Resolve, download if needed, and load the model: (net, thresholds, folder)."""
        from ._stardist_net import StarDistNetConfig, build_stardist_unet, load_keras_weights

        folder = resolve_model_dir(self.config.model)
        net = build_stardist_unet(StarDistNetConfig.from_json(folder / "config.json"))
        load_keras_weights(net, _weights_file(folder))
        net.eval().to(_torch_device(self.config.device))
        return net, read_thresholds(folder), folder

    @property
    def thresholds(self) -> dict[str, float]:
        """The (prob, nms) thresholds in use: the config's, else the folder's."""
        _, folder_thresholds, _ = self.load()
        cfg = self.config
        return {
            "prob": folder_thresholds["prob"] if cfg.prob_thresh is None else cfg.prob_thresh,
            "nms": folder_thresholds["nms"] if cfg.nms_thresh is None else cfg.nms_thresh,
        }

    # -- segmentation --------------------------------------------------------------------

    def iter_segment(self, rgb: np.ndarray, mpp: float) -> Generator[Progress, None, np.ndarray]:
        """Yield ``Progress`` per network tile, return the labels; stop iterating to cancel."""
        rgb = check_rgb(rgb, mpp)
        shape = rgb.shape[:2]
        value_range = self.config.norm_range or robust_range(
            rgb, self.config.norm_percentiles, self.config.min_contrast
        )
        if min(shape) == 0 or value_range is None:
            return np.zeros(shape, np.uint32)
        image = normalize(rgb, value_range)
        image = _resample(image, mpp / self.config.model_mpp)
        prediction, n_steps = self.iter_predict(image), 1
        while True:  # re-yield the tiles with one more step to come: the NMS
            try:
                step = next(prediction)
            except StopIteration as done:
                prob, dist = done.value
                break
            n_steps = step.total + 1
            yield Progress(step.done, n_steps, step.message)
        yield Progress(n_steps - 1, n_steps, "StarDist non-maximum suppression")
        return self._labels_from_prediction(prob, dist, shape, image.shape[:2])

    def iter_predict(self, image: np.ndarray) -> Generator[Progress, None, tuple]:
        """Network output (prob (h, w), dist (h, w, n_rays)) at 1/grid of a normalised image.

        Same layout and padding rule as ``StarDist2D.predict``; tiles overlap by the receptive
        field, so the result does not depend on ``tile_px``.
        """
        import torch

        net = self.load()[0]
        cfg = net.config
        div_y, div_x = cfg.div_by
        gy, gx = cfg.grid
        h, w = image.shape[:2]
        pad_y, pad_x = (-h) % div_y, (-w) % div_x
        # Pad at the end, like stardist's resizer, so pixel (0, 0) stays on the output grid.
        mode = "reflect" if min(h, w) > 1 else "edge"
        padded = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode=mode)
        halo = round_up(cfg.receptive_radius_px(), max(div_y, div_x))
        tile = round_up(self.config.tile_px, max(div_y, div_x))
        hp, wp = padded.shape[:2]
        prob = np.zeros((hp // gy, wp // gx), np.float32)
        dist = np.zeros((hp // gy, wp // gx, cfg.n_rays), np.float32)
        # Cores and windows are multiples of div_by, so they stay on the output grid.
        grid = TileGrid((hp, wp), tile, halo_px=halo)
        device = next(net.parameters()).device
        for i, (row, col) in enumerate(grid.tiles()):
            yield Progress(i, grid.n_tiles, f"StarDist tile {i + 1}/{grid.n_tiles}")
            core, read = grid.core(row, col), grid.padded(row, col)
            window = np.ascontiguousarray(padded[read.slices].transpose(2, 0, 1))
            with torch.inference_mode():
                p, d = net(torch.from_numpy(window)[None].to(device))
            sy, sx = _on_grid(Box(core.y - read.y, core.x - read.x, core.h, core.w), gy, gx)
            dy, dx = _on_grid(core, gy, gx)
            prob[dy, dx] = p[0, 0, sy, sx].cpu().numpy()
            dist[dy, dx] = d[0, :, sy, sx].permute(1, 2, 0).cpu().numpy()
        out_h, out_w = hp // gy - pad_y // gy, wp // gx - pad_x // gx
        # StarDist clips tiny distances: degenerate polygons upset its geometry code.
        return prob[:out_h, :out_w], np.maximum(1e-3, dist[:out_h, :out_w])

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Blocking form of :meth:`iter_predict` (normalised float image, model pixel size)."""
        return drain(self.iter_predict(image))

    def _labels_from_prediction(self, prob, dist, shape, model_shape) -> np.ndarray:
        from stardist.geometry import polygons_to_label
        from stardist.nms import non_maximum_suppression

        net, _, _ = self.load()
        thresholds = self.thresholds
        points, probi, disti = non_maximum_suppression(
            dist,
            prob,
            grid=net.config.grid,
            prob_thresh=thresholds["prob"],
            nms_thresh=thresholds["nms"],
        )
        if len(points) == 0:
            return np.zeros(shape, np.uint32)
        # Back to input pixels: pixel centres map as (p + 0.5) * scale - 0.5, and star polygons
        # stay star polygons under scaling, so only origins and ray lengths change.
        scale = np.array(shape, float) / np.array(model_shape, float)
        points = (points + 0.5) * scale - 0.5
        labels = polygons_to_label(disti, points, shape=shape, prob=probi, scale_dist=scale)
        return sequential_labels(labels)


# -- helpers ------------------------------------------------------------------------------


def normalize(rgb: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Map grey level ``low`` to 0 and ``high`` to 1 (float32, not clipped, as csbdeep does)."""
    low, high = value_range
    return (rgb.astype(np.float32) - np.float32(low)) / np.float32(high - low)


def _resample(image: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1.0) < 1e-3:
        return image
    from skimage.transform import resize

    shape = tuple(max(1, round(s * factor)) for s in image.shape[:2])
    out = resize(image, shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
    return out.astype(np.float32, copy=False)


def _on_grid(box: Box, gy: int, gx: int) -> tuple[slice, slice]:
    """Slices of a box (corners on multiples of the grid) in the network's 1/grid output."""
    return slice(box.y // gy, box.y1 // gy), slice(box.x // gx, box.x1 // gx)


def _torch_device(preference: str):
    import torch

    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def _weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no StarDist weights; expected one of {WEIGHT_FILES}")


def read_thresholds(folder: Path) -> dict[str, float]:
    """``thresholds.json`` of a model folder, StarDist's defaults when it has none."""
    path = Path(folder) / "thresholds.json"
    if not path.is_file():
        return dict(_DEFAULT_THRESHOLDS)
    data = json.loads(path.read_text())
    if not {"prob", "nms"} <= data.keys():
        raise ValueError(f"{path}: expected keys 'prob' and 'nms', found {sorted(data)}")
    return {"prob": float(data["prob"]), "nms": float(data["nms"])}


def resolve_model_dir(model: str | Path) -> Path:
    """The local folder of ``model``: a StarDist2D folder, or a registered name (downloaded)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a StarDist model folder (no config.json)")
        _weights_file(path)
        return path
    name = str(model)
    if name not in PRETRAINED:
        if os.sep in name or name.startswith((".", "~")):
            raise FileNotFoundError(f"StarDist model folder not found: {path}")
        raise ValueError(f"unknown StarDist model {name!r}: pass a folder or one of {PRETRAINED}")
    cached = _cached_pretrained(name)
    if cached is not None:
        return cached
    from ._tf_safe import download_stardist_model

    return download_stardist_model(name)


def _cached_pretrained(name: str) -> Path | None:
    """A model stardist already downloaded (Keras cache), found without starting TensorFlow."""
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    base = keras_home / "models" / "StarDist2D" / name
    for config in sorted(base.glob("**/config.json")) if base.is_dir() else []:
        if any((config.parent / w).is_file() for w in WEIGHT_FILES):
            return config.parent
    return None
