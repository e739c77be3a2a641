"""The event loops' stalls on a time axis: one lane per loop thread."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from ..style import WAIT_COLORS
from .base import _empty_figure, _short, _styled, _subplots


@_styled
def loop_stalls(loops: list[dict[str, Any]], wall_s: float | None = None) -> Figure:
    """Each loop's observed span (light) and its stalls (coloured by what
    the thread did meanwhile, labelled with the culprit); ``loops``:
    :func:`circuit.analysis.loops.loop_figures`."""
    if not loops:
        return _empty_figure("Event loop stalls", "no event loop thread in this run")
    fig, ax = _subplots(figsize=(10, 1.2 + 0.8 * len(loops)))
    labels = []
    for y, lp in enumerate(loops):
        ax.broken_barh(
            [(lp["start_s"], lp["observed_s"])], (y - 0.3, 0.6), color="#eeeeee", zorder=1
        )
        for st in lp["stalls"]:
            ax.broken_barh(
                [(st["start_s"], st["duration_s"])],
                (y - 0.3, 0.6),
                color=WAIT_COLORS.get(st["state"], WAIT_COLORS["other"]),
                edgecolor="black",
                linewidth=0.5,
                zorder=2,
            )
            ax.text(
                st["start_s"],
                y + 0.34,
                _short(st.get("culprit") or st["state"], 40),
                fontsize=8,
                va="bottom",
            )
        name = f" {lp['thread_name']}" if lp.get("thread_name") else ""
        labels.append(_short(f"PID {lp['pid']}{name} ({lp['tid']})", 32))
    ax.set_yticks(range(len(loops)), labels)
    ax.set_ylim(-0.6, len(loops) - 0.1 + 0.4)
    ax.set_xlabel("seconds since start")
    if wall_s:
        ax.set_xlim(0, max(wall_s, max(lp["start_s"] + lp["observed_s"] for lp in loops)))
    states = sorted({st["state"] for lp in loops for st in lp["stalls"]})
    for s in states:
        ax.bar(0, 0, color=WAIT_COLORS.get(s, WAIT_COLORS["other"]), label=s)
    if states:
        ax.legend(loc="upper right", fontsize=8, title="blocked in", title_fontsize=8)
    ax.set_title("Event loop stalls (the loop ran nothing else meanwhile)")
    ax.grid(axis="x", alpha=0.3)
    return fig
