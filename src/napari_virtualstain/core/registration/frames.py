"""Where a layer's pixels lie: pyramid levels, µm and the viewer's world, and between layers.

A napari image layer shows level 0 with ``scale`` (world units per pixel) and ``translate``
(the world position of pixel (0, 0)); level ``k`` of a pyramid covers ``downsample(k)`` level-0
pixels per pixel. Its µm frame is level-0 pixels times ``mpp`` (the frame every
:class:`~.transform.Registration` uses), whatever the world's units are. Conventions: (y, x);
a pixel index is its centre; the level-``k`` pixel ``i`` spans level-0 pixels
``[i * d, (i + 1) * d)``, so its centre is level-0 ``i * d + (d - 1) / 2``. (napari draws its
own multiscale levels with pixel ``i`` at level-0 ``i * d``, half a coarse pixel off this; maps
placed here sit where their pixels truly are, as the overlay does.)

Two layers shown in one world (a virtual-stain overlay over its source, a real stain on the same
slide) are related by :func:`world_registration`, so the QA code treats "same world" and
"registered" alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..geometry import Box, level_for_mpp, level_for_size
from .transform import Registration


@dataclass(frozen=True)
class LayerFrame:
    """Geometry of one layer: level shapes, level-0 µm/px and world placement of level 0.

    Attributes
    ----------
    shapes_px : tuple of (h, w)
        Each level's size, level 0 first.
    mpp : float
        µm per level-0 pixel.
    scale : (float, float)
        World units per level-0 pixel (napari ``layer.scale``).
    translate : (float, float)
        World position of level-0 pixel (0, 0) (napari ``layer.translate``).
    """

    shapes_px: tuple[tuple[int, int], ...]
    mpp: float
    scale: tuple[float, float] = (1.0, 1.0)
    translate: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        shapes = tuple((int(s[0]), int(s[1])) for s in self.shapes_px)
        object.__setattr__(self, "shapes_px", shapes)
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale[-2:]))
        object.__setattr__(self, "translate", tuple(float(t) for t in self.translate[-2:]))
        if not shapes or any(min(s) < 1 for s in shapes):
            raise ValueError(f"a layer needs levels of at least 1 x 1 px, got {shapes}")
        if not (self.mpp > 0 and min(self.scale) > 0):
            raise ValueError(f"mpp and scale must be > 0, got mpp={self.mpp}, scale={self.scale}")

    @classmethod
    def from_layer_values(
        cls, level_shapes: Sequence, scale, translate=(0.0, 0.0), mpp: float | None = None
    ) -> LayerFrame:
        """From a layer's level shapes, ``scale`` and ``translate``; without ``mpp`` the world is
        taken to be µm (mpp = scale)."""
        scale = tuple(float(s) for s in scale[-2:])
        return cls(tuple(tuple(s[:2]) for s in level_shapes), mpp or scale[-1], scale, translate)

    # -- levels -------------------------------------------------------------------------------
    def downsample(self, level: int) -> float:
        return self.shapes_px[0][0] / self.shapes_px[level][0]

    @property
    def level_mpps(self) -> list[float]:
        return [self.mpp * self.downsample(k) for k in range(len(self.shapes_px))]

    @property
    def um_per_world(self) -> float:
        return self.mpp / self.scale[-1]

    def level_for_extent(self, extent_um: float, max_side_px: int) -> int:
        """The finest level at which ``extent_um`` spans at most ``max_side_px`` pixels."""
        return level_for_size([extent_um / m for m in self.level_mpps], max_px=max_side_px)

    def level_for_mpp(self, mpp: float) -> int:
        """The coarsest level not coarser than ``mpp`` (the level to read for that pixel size)."""
        return level_for_mpp(self.level_mpps, mpp)

    # -- pixels <-> world <-> µm --------------------------------------------------------------
    def level_scale(self, level: int) -> np.ndarray:
        return np.asarray(self.scale) * self.downsample(level)

    def level_translate(self, level: int) -> np.ndarray:
        d = self.downsample(level)
        return np.asarray(self.translate) + (d - 1) / 2 * np.asarray(self.scale)

    def px_to_world(self, points_px, level: int = 0) -> np.ndarray:
        pts = np.asarray(points_px, float)[..., -2:]
        return pts * self.level_scale(level) + self.level_translate(level)

    def world_to_px(self, points_world, level: int = 0) -> np.ndarray:
        pts = np.asarray(points_world, float)[..., -2:]
        return (pts - self.level_translate(level)) / self.level_scale(level)

    def world_to_um(self, points_world) -> np.ndarray:
        """World points in this layer's µm frame (level-0 pixel index x ``mpp``: the frame of
        :class:`~.transform.Registration`)."""
        return self.world_to_px(points_world, 0) * self.mpp

    def placement(self, level: int, box: Box) -> tuple[tuple, tuple]:
        """(scale, translate) in world units of an image whose pixel (0, 0) is the top-left
        pixel of ``box`` at ``level`` (a residual map of that region)."""
        scale = self.level_scale(level)
        translate = self.px_to_world(np.asarray(box.origin, float), level)
        return tuple(map(float, scale)), tuple(map(float, translate))

    def box_of_world_rect(self, lo_world, hi_world, level: int) -> Box:
        """The :class:`~..geometry.Box` of ``level`` pixels a world rectangle touches, clipped
        to the level. ``lo_world`` / ``hi_world`` are the rectangle's edges (not pixel centres).

        Raises ``ValueError`` when the rectangle misses the layer.
        """
        edges = self.world_to_px(np.array([lo_world, hi_world], float), level)
        lo, hi = edges.min(axis=0), edges.max(axis=0)
        eps = 1e-6  # an edge exactly on a pixel boundary does not take the next pixel
        h, w = self.shapes_px[level]
        y0, x0 = (max(int(np.floor(v + 0.5 + eps)), 0) for v in lo)
        y1, x1 = (min(int(np.ceil(v + 0.5 - eps)), n) for v, n in zip(hi, (h, w), strict=True))
        if y0 >= y1 or x0 >= x1:
            raise ValueError(
                f"the region (world {np.round(lo_world, 2).tolist()} - "
                f"{np.round(hi_world, 2).tolist()}) lies outside the layer"
            )
        return Box.from_corners(y0, x0, y1, x1)

    def covers(self, other: LayerFrame, level: int, box: Box, tol_px: float = 1.0) -> bool:
        """True when this layer's level 0 holds every pixel of ``other``'s ``box`` at ``level``
        (both layers in one world)."""
        y0, x0, y1, x1 = box.corners
        corners = other.px_to_world(np.array([[y0, x0], [y1 - 1, x1 - 1]], float), level)
        px = self.world_to_px(corners, 0)
        h, w = self.shapes_px[0]
        return bool(
            (px >= -0.5 - tol_px).all() and (px[:, 0] <= h - 0.5 + tol_px).all()
            and (px[:, 1] <= w - 0.5 + tol_px).all()
        )  # fmt: skip


def world_registration(fixed: LayerFrame, moving: LayerFrame) -> Registration:
    """The :class:`Registration` (fixed µm -> moving µm) of two layers shown in one world.

    It is exact (a scale and a shift), so a layer on another grid of the same slide (a virtual
    stain at the model's resolution over its source) is resampled like a registered one.
    """
    # fixed µm -> fixed px -> world -> moving px -> moving µm, per axis
    a = np.asarray(fixed.scale) / fixed.mpp / np.asarray(moving.scale) * moving.mpp
    b = (np.asarray(fixed.translate) - np.asarray(moving.translate)) / np.asarray(moving.scale)
    b = b * moving.mpp
    matrix = ((a[0], 0.0, b[0]), (0.0, a[1], b[1]), (0.0, 0.0, 1.0))
    return Registration(
        matrix_um=tuple(tuple(float(v) for v in row) for row in matrix),
        fixed_mpp=fixed.mpp,
        moving_mpp=moving.mpp,
        fixed_shape_px=fixed.shapes_px[0],
        moving_shape_px=moving.shapes_px[0],
        score=1.0,
        notes="same world: placed by the layers' scale and translate, not registered",
    )


def is_identity(registration: Registration, fixed: LayerFrame, moving: LayerFrame) -> bool:
    """True when ``registration`` maps ``fixed`` onto ``moving`` pixel for pixel (same grid)."""
    return (
        registration.is_affine
        and fixed.shapes_px == moving.shapes_px
        and abs(fixed.mpp - moving.mpp) <= 1e-9 * fixed.mpp
        and np.allclose(registration.affine, np.eye(3), atol=1e-9)
    )


# -- QA regions -------------------------------------------------------------------------------
def view_region(frame: LayerFrame, corner_px, data_level: int, max_side_px: int) -> tuple[int, Box]:
    """(level, box) of what a layer shows: napari's ``corner_pixels`` (at ``data_level``),
    on the finest level where the region fits ``max_side_px``."""
    corners = np.asarray(corner_px, float)[:, -2:]
    # corner_pixels are the first and last pixels in view: their outer edges bound the view
    lo, hi = frame.px_to_world(corners + [[-0.5], [0.5]], data_level)
    extent_um = float(np.max((hi - lo) / np.asarray(frame.scale))) * frame.mpp
    level = frame.level_for_extent(extent_um, max_side_px)
    return level, frame.box_of_world_rect(lo, hi, level)


def roi_region(
    frame: LayerFrame, shape_type: str, vertices_world, max_side_px: int
) -> tuple[int, Box, np.ndarray]:
    """(level, box, mask) of a napari shape (vertices in world units) over a layer.

    The ROI is taken into the layer's µm frame, so its box and mask honour the layer's scale and
    translate; the mask (box-sized, bool) is drawn on the chosen level's pixels.
    """
    from ..roi import ROI

    # ROI µm put level-0 pixel i's centre at (i + 0.5) * mpp (its edges on whole multiples)
    um = (frame.world_to_px(vertices_world, 0) + 0.5) * frame.mpp
    roi = ROI.from_pixels(shape_type, um, 1.0, "ROI")
    y0, x0, y1, x1 = roi.bbox_um()
    level = frame.level_for_extent(max(y1 - y0, x1 - x0), max_side_px)
    mpp = frame.level_mpps[level]
    box = roi.bbox_px(mpp, frame.shapes_px[level])
    return level, box, roi.mask(mpp, box.origin, box.shape)
