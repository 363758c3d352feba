"""Optional OpenSlide backend (``pip install napari-virtualstain[openslide]``).

For the formats tifffile does not read (MIRAX .mrxs, Leica .scn, Ventana .bif, Hamamatsu
.vms/.vmu, Sakura .svslide, DICOM-WSI .dcm). It yields the same lazy ``Slide`` as the tifffile
backend: each level is a dask array whose chunks are ``read_region`` calls on the file's tiles,
mpp and magnification come from the vendor metadata (``openslide.mpp-x``,
``openslide.objective-power``), and an embedded ICC profile is converted to sRGB.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import dask.array as da
import numpy as np

from .errors import SlideReadError
from .icc import to_srgb
from .slide import BACKGROUND_RGB, Slide

OPENSLIDE_SUFFIXES = (".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide", ".dcm")
DEFAULT_CHUNK_PX = 512
MAX_CHUNK_PX = 2048


def openslide_available() -> bool:
    try:
        import openslide  # noqa: F401
    except Exception:  # noqa: BLE001 - missing wheel or missing shared library
        return False
    return True


class _Level:
    """A numpy-like view of one OpenSlide level; indexing reads that region (RGBA over white).

    It keeps only the path and opens its own handle per process, so dask can pickle it to
    distributed workers.
    """

    def __init__(self, path: Path, level: int, shape: tuple[int, int], downsample: float) -> None:
        self.path, self.level, self.downsample = path, level, downsample
        self.shape = (*shape, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self._handle = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_handle", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _handle=None, _lock=threading.Lock())

    def _slide(self):
        with self._lock:
            if self._handle is None:
                import openslide

                self._handle = openslide.OpenSlide(str(self.path))
            return self._handle

    def __getitem__(self, key) -> np.ndarray:
        ys, xs = key[0], key[1]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        h, w = max(0, y1 - y0), max(0, x1 - x0)
        if h == 0 or w == 0:
            return np.full((h, w, 3), BACKGROUND_RGB, np.uint8)[(slice(None),) * 2 + key[2:]]
        # read_region takes level-0 coordinates for the top-left corner, level pixels for size.
        loc = (round(x0 * self.downsample), round(y0 * self.downsample))
        rgba = np.asarray(self._slide().read_region(loc, self.level, (w, h)))
        return _over_white(rgba)[(slice(None), slice(None), *key[2:])]


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """OpenSlide gives un-premultiplied RGBA, alpha 0 outside the scanned area: composite on white."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + BACKGROUND_RGB * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)


class _Associated(Mapping):
    """Associated images (label, macro, thumbnail), decoded on first access."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path, self.names, self._cache = path, names, {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.names:
            raise KeyError(key)
        if key not in self._cache:
            import openslide

            with openslide.OpenSlide(str(self.path)) as slide:
                img = slide.associated_images[key].convert("RGBA")
            self._cache[key] = _over_white(np.asarray(img))
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def open_openslide(path: Path, apply_icc: bool = True) -> Slide:
    """Open ``path`` with OpenSlide as a lazy ``Slide``; raises ``SlideReadError``."""
    path = Path(path)
    try:
        import openslide
    except Exception as exc:  # noqa: BLE001
        raise SlideReadError(
            path,
            "this format needs OpenSlide: pip install 'napari-virtualstain[openslide]' "
            f"({type(exc).__name__}: {exc})",
        ) from exc
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
        slide = openslide.OpenSlide(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenSlideError, OpenSlideUnsupportedFormatError
        raise SlideReadError(
            path, f"OpenSlide cannot read it ({type(exc).__name__}: {exc})"
        ) from exc
    with slide:
        props = dict(slide.properties)
        levels = []
        for k, ((w, h), ds) in enumerate(
            zip(slide.level_dimensions, slide.level_downsamples, strict=True)
        ):
            chunk = _chunk_px(props, k)
            levels.append(
                da.from_array(
                    _Level(path, k, (h, w), ds),
                    chunks=(chunk, chunk, 3),
                    asarray=True,
                    fancy=False,
                    name=f"openslide-{path}-{path.stat().st_mtime_ns}-{k}",
                )
            )
        associated = list(slide.associated_images)
        profile = slide.color_profile.tobytes() if apply_icc and slide.color_profile else None
    out = Slide.from_file(
        path,
        levels,
        f"openslide:{vendor}",
        mpp=_mpp(props),
        magnification=_float(props.get("openslide.objective-power")),
        associated=_Associated(path, associated),
        notes="",
    )
    return to_srgb(out, profile)


def _chunk_px(props: dict, level: int) -> int:
    tile = _float(props.get(f"openslide.level[{level}].tile-width")) or 0
    # Whole tiles, at least DEFAULT_CHUNK_PX (small tiles make too many dask tasks).
    if tile <= 0:
        return DEFAULT_CHUNK_PX
    tile = int(tile)
    return min(MAX_CHUNK_PX, max(tile, (DEFAULT_CHUNK_PX // tile) * tile))


def _mpp(props: dict) -> float | None:
    x, y = _float(props.get("openslide.mpp-x")), _float(props.get("openslide.mpp-y"))
    if x is None or not (0 < x < 50):
        return None
    # Non-square pixels are rare; report x, as the tifffile backend does.
    return x if y is None or abs(x - y) / x < 0.05 else (x + y) / 2


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
