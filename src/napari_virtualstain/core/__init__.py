"""Pure numerics and I/O. Never imports napari or Qt (tested)."""
