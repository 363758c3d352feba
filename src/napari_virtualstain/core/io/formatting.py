"""Human-readable slide summaries, shared by the CLI and the Slide widget."""

from __future__ import annotations


def format_summary(summary: dict) -> str:
    """Format ``Slide.summary()`` as a short multi-line text."""
    mpp = summary["mpp"]
    lines = [
        f"{summary['name']}  [{summary['format']}]",
        f"path: {summary['path']}",
        f"pixel size: {mpp:.4f} µm/px"
        if mpp is not None
        else "pixel size: UNKNOWN (no mpp in file)",
        f"magnification: {summary['magnification']:g}x"
        if summary["magnification"]
        else "magnification: unknown",
        f"levels: {len(summary['levels'])}",
    ]
    for lv in summary["levels"]:
        h, w = lv["shape"][:2]
        level_mpp = f"{lv['mpp']:.4f} µm/px" if lv["mpp"] is not None else "mpp ?"
        built = "  (built lazily by downsampling)" if lv["built"] else ""
        lines.append(
            f"  {lv['level']}: {w} x {h} px, chunks {lv['chunks_px'][1]}x{lv['chunks_px'][0]}, "
            f"downsample {lv['downsample']:g}, {level_mpp}{built}"
        )
    if summary["associated"]:
        lines.append(f"associated: {', '.join(summary['associated'])}")
    if summary["notes"]:
        lines.append(f"notes: {summary['notes']}")
    return "\n".join(lines)
