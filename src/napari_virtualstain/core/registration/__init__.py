"""Registration of adjacent sections (for example real H&E and real Ki-67).

:func:`iter_register` (progress generator) / :func:`register_images` / :func:`register_slides`
estimate a :class:`Registration`: an affine in µm (rotations and flips included) plus an optional
smooth displacement field, that maps points, ROIs, GeoJSON, images and label images both ways.
"""

from __future__ import annotations

from ..geometry import level_for_size
from ..progress import drain
from .estimate import (
    RegistrationConfig,
    RegistrationError,
    iter_register,
    tissue_signal_image,
)
from .transform import DIRECTIONS, Registration

__all__ = [
    "DIRECTIONS",
    "Registration",
    "RegistrationConfig",
    "RegistrationError",
    "iter_register",
    "register_images",
    "register_slides",
    "iter_register_slides",
    "tissue_signal_image",
]


def register_images(fixed_rgb, moving_rgb, fixed_mpp, moving_mpp, config=None, **kwargs):
    """Blocking :func:`iter_register`."""
    return drain(iter_register(fixed_rgb, moving_rgb, fixed_mpp, moving_mpp, config, **kwargs))


def _working_level(slide, side_px: int) -> int:
    # the coarsest level still at least twice the working size: cheap to read, detailed enough
    return level_for_size([lv.shape for lv in slide.levels], min_px=2 * side_px)


def iter_register_slides(fixed, moving, config=None):
    """:func:`iter_register` on two :class:`~napari_virtualstain.core.io.Slide` s."""
    config = config or RegistrationConfig()
    images = []
    for name, slide in (("fixed", fixed), ("moving", moving)):
        if slide.mpp is None:
            raise ValueError(f"{name} slide {slide.path}: pixel size (mpp) unknown; set it first")
        level = _working_level(slide, config.refine_side_px)
        images.append((slide.levels[level].compute(), slide.level_mpp(level)))
    level0 = [(s.mpp, tuple(s.levels[0].shape[:2])) for s in (fixed, moving)]
    return (
        yield from iter_register(
            images[0][0],
            images[1][0],
            images[0][1],
            images[1][1],
            config,
            fixed_level0=level0[0],
            moving_level0=level0[1],
        )
    )


def register_slides(fixed, moving, config=None):
    """Blocking :func:`iter_register_slides`."""
    return drain(iter_register_slides(fixed, moving, config))
