"""The registration result: a serialisable fixed <-> moving mapping in physical units.

Convention: a point ``p`` (µm, level-0 (y, x)) of the fixed slide lies at
``A @ (p + d(p))`` on the moving slide, where ``A`` is a 3x3 affine in µm (rotation, flips,
scale, shear, translation) and ``d`` an optional smooth displacement field (µm) sampled on a
regular grid of the fixed slide. Warping the moving image into the fixed frame pulls pixels
through this map, so no inverse is needed for images; points and ROIs going the other way use
the affine inverse and a fixed-point iteration for ``d``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DIRECTIONS = ("fixed_to_moving", "moving_to_fixed")


@dataclass(frozen=True)
class Registration:
    """Fixed -> moving mapping between two slides.

    Attributes
    ----------
    matrix_um : 3x3 tuple
        Homogeneous affine from fixed µm (y, x) to moving µm (y, x).
    fixed_mpp, moving_mpp : float
        Level-0 pixel sizes (µm/px) of the two slides.
    fixed_shape_px, moving_shape_px : (int, int)
        Level-0 (y, x) sizes.
    score : float
        Normalised cross-correlation of the tissue signals after registration (1 = identical).
    field_spacing_um : float or None
        Grid spacing of ``displacement_um``; None when there is no non-rigid part.
    displacement_um : (2, gy, gx) float32 array or None
        The (dy, dx) correction at grid point (i, j), i.e. at fixed µm (i, j) * spacing.
    notes : str
        How it was obtained (steps, flips, angle).
    """

    matrix_um: tuple[tuple[float, float, float], ...]
    fixed_mpp: float
    moving_mpp: float
    fixed_shape_px: tuple[int, int]
    moving_shape_px: tuple[int, int]
    score: float
    field_spacing_um: float | None = None
    displacement_um: np.ndarray | None = field(default=None, compare=False, repr=False)
    notes: str = ""

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix_um, dtype=float)
        if m.shape != (3, 3) or not np.all(np.isfinite(m)) or not np.allclose(m[2], [0, 0, 1]):
            raise ValueError(f"matrix_um must be a finite 3x3 affine, got {m.tolist()}")
        if abs(np.linalg.det(m[:2, :2])) < 1e-6:
            raise ValueError(f"matrix_um is singular: {m.tolist()}")
        if not (self.fixed_mpp > 0 and self.moving_mpp > 0):
            raise ValueError(f"mpp must be > 0, got {self.fixed_mpp} and {self.moving_mpp}")
        if (self.displacement_um is None) != (self.field_spacing_um is None):
            raise ValueError("displacement_um and field_spacing_um come together")
        if self.displacement_um is not None:
            d = np.asarray(self.displacement_um)
            if d.ndim != 3 or d.shape[0] != 2 or min(d.shape[1:]) < 2:
                raise ValueError(f"displacement_um must be (2, gy>=2, gx>=2), got {d.shape}")
            if not self.field_spacing_um > 0:
                raise ValueError(f"field_spacing_um must be > 0, got {self.field_spacing_um}")

    # -- core mapping -------------------------------------------------------------------------
    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.matrix_um, dtype=np.float64)

    @property
    def is_affine(self) -> bool:
        """True when an affine on the napari layer shows the moving slide exactly."""
        return self.displacement_um is None

    def displacement_at(self, points_um: np.ndarray) -> np.ndarray:
        """d(p) at fixed points (N, 2) µm, bilinear between grid points, constant outside."""
        from scipy.ndimage import map_coordinates

        pts = np.asarray(points_um, dtype=np.float64).reshape(-1, 2)
        if self.displacement_um is None:
            return np.zeros_like(pts)
        grid = pts.T / self.field_spacing_um
        return np.stack(
            [map_coordinates(c, grid, order=1, mode="nearest") for c in self.displacement_um], 1
        )

    def fixed_to_moving_um(self, points_um: np.ndarray) -> np.ndarray:
        pts = np.asarray(points_um, dtype=np.float64).reshape(-1, 2)
        q = pts + self.displacement_at(pts)
        return q @ self.affine[:2, :2].T + self.affine[:2, 2]

    def moving_to_fixed_um(self, points_um: np.ndarray, n_iter: int = 30) -> np.ndarray:
        pts = np.asarray(points_um, dtype=np.float64).reshape(-1, 2)
        inv = np.linalg.inv(self.affine)
        target = pts @ inv[:2, :2].T + inv[:2, 2]
        p = target.copy()
        # p + d(p) = target; d is smooth and small next to its own wavelength, so this contracts
        for _ in range(n_iter if self.displacement_um is not None else 0):
            p = target - self.displacement_at(p)
        return p

    def map_points(self, points_px: np.ndarray, direction: str = "fixed_to_moving") -> np.ndarray:
        """Level-0 pixel (y, x) points of one slide to level-0 pixels of the other."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
        if direction == "fixed_to_moving":
            return self.fixed_to_moving_um(pts * self.fixed_mpp) / self.moving_mpp
        return self.moving_to_fixed_um(pts * self.moving_mpp) / self.fixed_mpp

    # -- ROIs ---------------------------------------------------------------------------------
    def map_rois(self, rois: list, direction: str = "fixed_to_moving") -> list:
        """:class:`~napari_virtualstain.core.roi.ROI` s (µm) of one slide as polygons on the other.

        Holes (a necrosis left out of the count) are mapped with their outline and stay holes.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        fn = self.fixed_to_moving_um if direction == "fixed_to_moving" else self.moving_to_fixed_um
        return [r.map_points(fn) for r in rois]

    def map_geojson(self, geojson: dict, direction: str = "fixed_to_moving") -> dict:
        """Map a GeoJSON object whose coordinates are level-0 pixels [x, y] (QuPath's layout)."""

        def convert(coords):
            arr = np.asarray(coords, dtype=np.float64)
            if arr.ndim == 1:  # a single position
                return self.map_points(arr[::-1][None], direction)[0, ::-1].tolist()
            if arr.ndim == 2:
                return self.map_points(arr[:, ::-1], direction)[:, ::-1].tolist()
            return [convert(c) for c in coords]

        def walk(obj):
            if isinstance(obj, dict):
                return {k: convert(v) if k == "coordinates" else walk(v) for k, v in obj.items()}
            if isinstance(obj, list):
                return [walk(v) for v in obj]
            return obj

        return walk(geojson)

    # -- display ------------------------------------------------------------------------------
    def layer_affine(self, world_mpp: float | None = None) -> np.ndarray:
        """3x3 affine from moving level-0 pixels to the fixed slide's world (napari ``affine=``).

        World units are µm when ``world_mpp`` is None, else fixed pixels of that size. Exact only
        when :attr:`is_affine`; with a field it is the affine part (use :meth:`warp` then).
        """
        to_um = np.diag([self.moving_mpp, self.moving_mpp, 1.0])
        world = np.linalg.inv(self.affine) @ to_um
        if world_mpp is not None:
            world = np.diag([1 / world_mpp, 1 / world_mpp, 1.0]) @ world
        return world

    def warp(
        self,
        moving,
        out_shape_px: tuple[int, int],
        out_mpp: float,
        moving_mpp: float,
        order: int = 1,
        cval: float = 255,
        chunk_px: int = 512,
    ):
        """The moving image resampled lazily onto a fixed-frame grid of pixel size ``out_mpp``.

        ``moving`` is a numpy or dask (y, x) or (y, x, c) array of pixel size ``moving_mpp``
        (any pyramid level). ``order=0`` keeps label images as labels. Returns a dask array
        whose chunks read only the moving region they need.
        """
        import dask.array as da

        from ._warp import warp_block

        shape = tuple(int(s) for s in out_shape_px) + tuple(moving.shape[2:])
        chunks = (chunk_px, chunk_px) + tuple(moving.shape[2:])
        template = da.zeros(shape, chunks=chunks, dtype=np.uint8)
        return template.map_blocks(
            warp_block,
            dtype=moving.dtype,
            registration=self,
            moving=moving,
            out_mpp=out_mpp,
            moving_mpp=moving_mpp,
            order=order,
            cval=cval,
        )

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {
            "type": "napari_virtualstain.Registration",
            "version": 1,
            "convention": "moving_um = matrix_um @ (fixed_um + d(fixed_um)); (y, x)",
            "matrix_um": [list(map(float, r)) for r in self.matrix_um],
            "fixed_mpp": self.fixed_mpp,
            "moving_mpp": self.moving_mpp,
            "fixed_shape_px": list(self.fixed_shape_px),
            "moving_shape_px": list(self.moving_shape_px),
            "score": self.score,
            "notes": self.notes,
            "field_spacing_um": self.field_spacing_um,
            "displacement_um": None,
        }
        if self.displacement_um is not None:
            d["displacement_um"] = np.round(self.displacement_um, 4).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Registration:
        if d.get("type") != "napari_virtualstain.Registration":
            raise ValueError(f"not a registration (type {d.get('type')!r})")
        disp = d.get("displacement_um")
        return cls(
            matrix_um=tuple(tuple(r) for r in d["matrix_um"]),
            fixed_mpp=float(d["fixed_mpp"]),
            moving_mpp=float(d["moving_mpp"]),
            fixed_shape_px=tuple(d["fixed_shape_px"]),
            moving_shape_px=tuple(d["moving_shape_px"]),
            score=float(d["score"]),
            field_spacing_um=d.get("field_spacing_um"),
            displacement_um=None if disp is None else np.asarray(disp, dtype=np.float32),
            notes=d.get("notes", ""),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Registration:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: not a readable registration file ({err})") from err
