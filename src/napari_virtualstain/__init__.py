"""napari-virtualstain: virtual staining, Ki-67 ratio and QA for whole-slide images."""

__version__ = "0.1.0"
