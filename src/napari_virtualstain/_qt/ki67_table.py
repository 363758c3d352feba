"""The Ki-67 results table: the key columns (ROI, index, bin, grade, Δ) first and narrow.

Values are formatted from core results only; nothing is computed here. A result without a bin
or grade (too few nuclei, stain not verified, no nuclei) shows empty cells and the reason in
"Note", never a grade beside a warning.
"""

from __future__ import annotations

from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

COLUMNS = (
    "ROI", "Stain", "Index %", "Bin", "WHO", "Δ vs real", "Nuclei", "Positive", "Faint",
    "Area ratio", "H-score", "Note", "Image",
)  # fmt: skip
KEY_COLUMNS = ("ROI", "Stain", "Index %", "Bin", "WHO", "Δ vs real")
# Narrow enough that the key columns fit the default dock width (checked by a test).
KEY_WIDTHS_PX = {"ROI": 72, "Stain": 50, "Index %": 52, "Bin": 54, "WHO": 36, "Δ vs real": 60}


class ResultsTable(QTableWidget):
    """One row per (image, ROI); rows of the same ROI sit side by side."""

    def __init__(self) -> None:
        super().__init__(0, len(COLUMNS))
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(22)
        self.setMinimumHeight(130)  # header + about four rows
        header = self.horizontalHeader()
        header.setMinimumSectionSize(30)
        for j, name in enumerate(COLUMNS):
            if name in KEY_WIDTHS_PX:
                header.setSectionResizeMode(j, QHeaderView.ResizeMode.Interactive)
                self.setColumnWidth(j, KEY_WIDTHS_PX[name])
        tips = {
            "Index %": "Labelling index: positive / all nuclei (by count)",
            "Stain": "real: a scanned stain; virtual: made by a model (its layer is in Image)",
            "Δ vs real": "Virtual minus real labelling index, same ROI of a declared pair only",
            "Faint": "Nuclei too faint to classify (H + DAB OD < 0.1), counted as negative",
        }
        for j, name in enumerate(COLUMNS):
            self.horizontalHeaderItem(j).setToolTip(tips.get(name, name))

    def show_runs(self, entries) -> None:
        """``entries``: (image name, RatioRun, ROI name -> Δ index, is virtual) per run."""
        rows = []
        for image, run, deltas, virtual in entries:
            for r in run.results:
                d = deltas.get(r.name)
                rows.append(
                    {
                        "ROI": r.name,
                        "Stain": "virtual" if virtual else "real",
                        "Index %": f"{100 * r.labelling_index:.1f}",
                        "Bin": r.bin or "",
                        "WHO": r.who_grade or "",
                        "Δ vs real": "" if d is None else f"{100 * d:+.1f}",
                        "Nuclei": str(r.n_nuclei),
                        "Positive": str(r.n_positive),
                        "Faint": str(r.n_faint),
                        "Area ratio": f"{r.area_ratio:.3f}",
                        "H-score": f"{r.h_score:.1f}",
                        "Note": r.no_grade_reason,
                        "Image": image,
                    }
                )
        rows.sort(key=lambda row: (row["ROI"], row["Image"]))
        self.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, name in enumerate(COLUMNS):
                item = QTableWidgetItem(row[name])
                item.setToolTip(row["Note"] or row[name])
                self.setItem(i, j, item)

    def records(self) -> list[dict[str, str]]:
        """The table as text, one dict per row (column name -> cell)."""
        return [
            {name: self.item(i, j).text() for j, name in enumerate(COLUMNS)}
            for i in range(self.rowCount())
        ]

    def key_columns_visible(self) -> bool:
        """True when every key column lies inside the visible width, without scrolling."""
        width = self.viewport().width()
        for name in KEY_COLUMNS:
            j = COLUMNS.index(name)
            if self.columnViewportPosition(j) + self.columnWidth(j) > width:
                return False
        return True
