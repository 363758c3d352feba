"""The staining engine: tiles of a slide in, virtual-stain tiles out.

Layers inside the package, lowest first (nothing imports upward; ``tests/test_import_graph.py``
proves it):

- ``tiling``: boxes, tile grids, halos and blending windows;
- ``tissue``: the tissue mask that decides which tiles are computed;
- ``cache`` and ``provenance``: the tile caches and what a run records;
- ``config``: ``StainConfig`` (the user's choices) and ``StainPlan`` (how a run will go);
- ``stain``: ``StainEngine``, batches of tiles through a model, and ``make_plan``;
- ``lazy``: the lazy, cached virtual-stain pyramid (``open_virtual_stain``, ``stain_image``);
- ``distributed``: whole slides to OME-Zarr on a dask client (``stain_slide``).
"""

from __future__ import annotations

from .cache import DiskCache, MemoryLRU, TileCache, TileKey, shared_cache
from .distributed import StainResult, get_client, stain_slide
from .lazy import VirtualStain, VirtualStainHandle, open_virtual_stain, stain_image
from .provenance import build_provenance, slide_identity
from .stain import MppUnknownError, StainConfig, StainEngine, StainPlan, make_plan
from .tiling import Box, TileGrid, blend_weights, map_box, order_centre_out
from .tissue import TissueConfig, slide_tissue_mask, tissue_mask, tissue_tiles

__all__ = [
    "Box",
    "DiskCache",
    "MemoryLRU",
    "MppUnknownError",
    "StainConfig",
    "StainEngine",
    "StainPlan",
    "StainResult",
    "TileCache",
    "TileGrid",
    "TileKey",
    "TissueConfig",
    "VirtualStain",
    "VirtualStainHandle",
    "blend_weights",
    "build_provenance",
    "get_client",
    "make_plan",
    "map_box",
    "open_virtual_stain",
    "order_centre_out",
    "shared_cache",
    "slide_identity",
    "stain_image",
    "stain_slide",
    "tissue_mask",
    "tissue_tiles",
    "slide_tissue_mask",
]
