"""The Ki-67 dock's actions on finished runs: hot spot, ROI import, GeoJSON / CSV export.

A mixin of ``Ki67Widget`` (it uses the widget's ``viewer``, ``runs``, ``status``,
``image_combo``, ``mpp_spin``, ``shapes_combo`` and ``hotspot_spin``). Every figure and file
comes from ``core.ki67``; these methods only pick the run, call core and show the result.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog


class Ki67Actions:
    """Hot spot, import and export for the Ki-67 dock."""

    def _run_for(self, image_name: str | None):
        return self.runs[image_name or next(reversed(self.runs))]

    def export_geojson(self, path, image_name: str | None = None) -> Path:
        """ROIs (with their results) and classified nuclei as QuPath GeoJSON."""
        from napari_virtualstain.core.ki67 import write_run_geojson

        skipped = write_run_geojson(path, self._run_for(image_name))
        if skipped:
            self.status.setText(f"Nuclei of ROIs {skipped} not exported (too large to outline)")
        return Path(path)

    def export_csv(self, nuclei_path, rois_path, image_name: str | None = None) -> None:
        """Per-nucleus and per-ROI CSV files."""
        from napari_virtualstain.core.ki67 import write_run_csv

        write_run_csv(nuclei_path, rois_path, self._run_for(image_name))

    def find_hotspot(self, image_name: str | None = None):
        """Add the square (side from the spin box) of highest labelling index as a Shapes layer.

        The search covers each measured ROI (``core.ki67.find_run_hotspot``); the best wins.
        """
        from napari_virtualstain.core.ki67 import find_run_hotspot

        from .._napari.ki67_layers import roi_shapes_layer_data

        if not self.runs:
            self.status.setText("Compute first: the hot spot is searched among measured nuclei")
            return None
        name = image_name or next(reversed(self.runs))
        run, size_um = self.runs[name], self.hotspot_spin.value()
        best = find_run_hotspot(run, size_um)
        if best is None:
            self.status.setText(f"No {size_um:.0f} µm window with enough nuclei inside the ROIs")
            return None
        layer = self.viewer.layers[name]
        roi = best.to_roi(f"hot spot {100 * best.labelling_index:.1f} %")
        data, kwargs, _ = roi_shapes_layer_data([roi], run.mpp, layer.scale, layer.translate,
                                                f"Hot spot ({name})", layer.units)  # fmt: skip
        if kwargs["name"] in self.viewer.layers:
            self.viewer.layers.remove(kwargs["name"])
        self.viewer.add_shapes(data, **kwargs)
        self.status.setText(
            f"Hot spot: {best.n_positive}/{best.n_nuclei} positive "
            f"({100 * best.labelling_index:.1f} %) in {size_um:.0f} µm"
        )
        return best

    def import_rois(self, path):
        """Read QuPath GeoJSON annotations as a Shapes layer on the chosen image; select it.

        napari shapes have no holes, so an ROI's interior rings (a necrosis left out in QuPath)
        go to their own "<layer> holes" layer, chosen as the dock's "Exclude" layer: their
        nuclei and area stay left out of the ratio, as in QuPath.
        """
        from napari_virtualstain.core.geojson import read_geojson

        from .._napari.ki67_layers import roi_shapes_layer_data

        name, mpp = self.image_combo.currentText(), self.mpp_spin.value()
        if name not in self.viewer.layers or mpp <= 0:
            self.status.setText("Choose the image layer and its pixel size before importing ROIs")
            return None
        try:
            rois = read_geojson(path, mpp).rois
        except ValueError as err:
            self.status.setText(str(err))
            return None
        if not rois:
            self.status.setText(f"{path}: no annotations to use as ROIs")
            return None
        layer = self.viewer.layers[name]
        data, kwargs, _ = roi_shapes_layer_data(rois, mpp, layer.scale, layer.translate,
                                                f"ROIs ({Path(path).name})", layer.units)  # fmt: skip
        shapes = self.viewer.add_shapes(data, **kwargs)
        note = self._add_holes(rois, mpp, layer, shapes.name)
        self.shapes_combo.setCurrentText(shapes.name)
        self.exclude_combo.setCurrentText(f"{shapes.name} holes" if note else "")
        self.status.setText(note or f"{len(rois)} ROI(s) imported as {shapes.name!r}")
        return shapes

    def _add_holes(self, rois, mpp: float, layer, name: str) -> str:
        """Add the ROIs' holes as a separate Shapes layer; the plain warning ("": no holes)."""
        from napari_virtualstain.core.roi import ROI

        from .._napari.ki67_layers import roi_shapes_layer_data

        holes = [
            ROI.polygon(f"{roi.name} hole {k}", ring)
            for roi in rois
            for k, ring in enumerate(roi.holes_um(), start=1)
        ]
        if not holes:
            return ""
        data, kwargs, _ = roi_shapes_layer_data(holes, mpp, layer.scale, layer.translate,
                                                f"{name} holes", layer.units)  # fmt: skip
        added = self.viewer.add_shapes(data, **{**kwargs, "edge_color": "red"})
        owners = sorted({roi.name for roi in rois if roi.holes})
        return (
            f"{len(rois)} ROI(s) imported as {name!r}; the {len(holes)} hole(s) of "
            f"{', '.join(owners)} are in {added.name!r}, chosen under Exclude: their nuclei and "
            "area are left out, as in QuPath"
        )

    def _ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import ROIs", "", "GeoJSON (*.geojson *.json)")
        if path:
            self.import_rois(path)

    def _ask_save(self, title: str, file_filter: str) -> str:
        """A file to export the runs to ("": nothing to export, or the dialog was cancelled)."""
        if not self.runs:
            return ""
        path, _ = QFileDialog.getSaveFileName(self, title, "", file_filter)
        return path

    def _ask_geojson(self) -> None:
        path = self._ask_save("Export GeoJSON", "GeoJSON (*.geojson)")
        if path:
            self.export_geojson(path)

    def _ask_csv(self) -> None:
        path = self._ask_save("Per-nucleus CSV", "CSV (*.csv)")
        if path:
            p = Path(path)
            self.export_csv(p, p.with_name(p.stem + "_rois.csv"))
