"""The QA dock's summary as a reader sees it: each figure named, with its unit (text only)."""

from __future__ import annotations

# key -> (label, unit, format); keys not listed are shown as they come
LABELS = {
    "ssim": ("SSIM (1 = identical)", "", "{:.3f}"),
    "psnr_db": ("PSNR", "dB", "{:.1f}"),
    "mae": ("mean absolute error", "grey levels of 255", "{:.1f}"),
    "mean_abs_rgb": ("mean |RGB residual|", "grey levels of 255", "{:.1f}"),
    "mean_abs_od": ("mean |optical density residual|", "OD", "{:.3f}"),
    "mean_abs_dab": ("mean |DAB residual|", "OD", "{:.3f}"),
    "mean_abs_hematoxylin": ("mean |hematoxylin residual|", "OD", "{:.3f}"),
    "missing_fraction": ("virtual stain not computed yet", "of the region", "{:.1%}"),
    "summary_level_mpp": ("summary computed at", "µm/px", "{:.2f}"),
    "cycle_ssim": ("cycle reconstruction SSIM", "", "{:.3f}"),
    "cycle_psnr_db": ("cycle reconstruction PSNR", "dB", "{:.1f}"),
    "cycle_mean_abs_rgb": ("cycle reconstruction mean |RGB error|", "grey levels of 255", "{:.1f}"),
    "nuclei_n_nuclei": ("nuclei compared", "", "{}"),
    "nuclei_agreement": ("nuclei with the same DAB call", "", "{:.1%}"),
}


def summary_lines(summary: dict, seconds: dict | None = None) -> list[str]:
    """One "label: value unit" line per figure, then the build time on one line."""
    lines = []
    for key, value in summary.items():
        label, unit, fmt = LABELS.get(key, (key.replace("_", " "), "", "{}"))
        if isinstance(value, float) and fmt == "{}":
            fmt = "{:.4g}"
        lines.append(f"{label}: {fmt.format(value)} {unit}".rstrip())
    if seconds:
        lines.append(f"(built in {sum(seconds.values()):.1f} s)")
    return lines


def region_text(box, level: int | None = None) -> str:
    """A ``core.geometry.Box`` for people: its size and where it starts, in level pixels."""
    where = f" of level {level}" if level else ""
    return f"a {box.w} x {box.h} px region{where} from (x {box.x}, y {box.y})"
