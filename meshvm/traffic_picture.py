"""traffic.png: every path's outcome per second during an upgrade, the phases marked, so an outage
shows where it happened at a glance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from meshvm.traffic import Phase, Request

ALL_OK, SOME_FAILED, ALL_FAILED, NONE = "#54a24b", "#f58518", "#e45756", "#d8d8d8"


def second_colours(requests: Sequence[Request], path: str, seconds: int) -> list[str]:
    """One colour per second of the run: all requests of that second succeeded, some failed, all
    failed, or there was none (a stalled path)."""
    counts = [[0, 0] for _ in range(seconds)]
    for r in requests:
        if r.path == path and 0 <= r.t < seconds:
            counts[int(r.t)][0 if r.ok else 1] += 1
    return [NONE if ok + bad == 0 else ALL_OK if bad == 0 else ALL_FAILED if ok == 0 else SOME_FAILED
            for ok, bad in counts]


def draw(requests: Sequence[Request], phases: Sequence[Phase], paths: Sequence[str], out: Path,
         disruptions: Sequence[Phase] = ()) -> Path | None:
    """Write the picture; None when nothing was recorded. matplotlib (Agg) is imported here only."""
    if not requests:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    seconds = math.ceil(max([r.t for r in requests] + [p.end for p in phases])) + 1
    fig, ax = plt.subplots(figsize=(min(4 + seconds / 15, 40), 0.6 * len(paths) + 2))
    for row, path in enumerate(paths):
        colours = second_colours(requests, path, seconds)
        ax.broken_barh([(s, 1) for s in range(seconds)], (row - 0.4, 0.8), facecolors=colours)
    for window in disruptions:  # announced outages (a VM's agent restarting), hatched over every path
        ax.axvspan(window.start, window.end, facecolor="none", edgecolor="#555555", hatch="//", linewidth=0)
    for phase in phases:
        ax.axvline(phase.start, color="#222222", linewidth=1)
        ax.text(phase.start, -0.6, f" {phase.name}", fontsize=8, va="bottom", rotation=20)
    ax.set_yticks(range(len(paths)), list(paths))
    ax.set_ylim(len(paths) - 0.5, -1.2)
    ax.set_xlabel("seconds since the traffic started (one cell per second)")
    handles = [Patch(color=c, label=n) for c, n in
               ((ALL_OK, "all ok"), (SOME_FAILED, "some failed"), (ALL_FAILED, "all failed"), (NONE, "no request"))]
    if disruptions:
        handles.append(Patch(facecolor="none", edgecolor="#555555", hatch="//", label="announced disruption"))
    ax.legend(handles=handles,
              loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8, ncol=5, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
