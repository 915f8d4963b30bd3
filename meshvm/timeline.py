"""timeline.png: one bar per stage and exercise of a run, on the run's clock, so overlaps show; the
critical path (the longest chain of needed stages, then the exercises) drawn in its own colour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshvm.phases import Figures

COLOURS = {"passed": "#4c78a8", "failed": "#e45756", "interrupted": "#f58518", "running": "#bab0ac"}
CRITICAL = "#222222"


def draw(phases: list[dict[str, Any]], figures: Figures, out: Path) -> Path | None:
    """Write the picture; None when there is nothing to draw. matplotlib (Agg, no display) is imported
    here only: a run that draws nothing never loads it."""
    bars = [p for p in phases if p.get("start_s") is not None]
    if not bars:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    critical = set(figures.critical_path)
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(bars) + 1.6))
    for row, p in enumerate(bars):
        start, end = float(p["start_s"]), float(p.get("end_s") or p["start_s"])
        ax.barh(row, max(end - start, 0.05), left=start, color=COLOURS.get(p["outcome"], "#bab0ac"),
                edgecolor=CRITICAL if p["name"] in critical else "none", linewidth=1.6)
    ax.set_yticks(range(len(bars)), [("* " if p["name"] in critical else "") + p["name"] for p in bars])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first stage started")
    ratio = figures.wall_over_critical_path
    ax.set_title(f"wall {figures.wall_s:.1f} s, critical path (*) {figures.critical_path_s:.1f} s"
                 + (f", wall / critical path {ratio:.2f}" if ratio else ""), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
