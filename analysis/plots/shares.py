"""The thread timeline of a long run, from per-bucket shares.

A run of hours has millions of state intervals; a lane a thousand pixels
wide shows a few hundred.  :func:`analysis.query.scan` sums each thread's
time by wait reason in a few hundred time buckets while it reads the run
in batches; this draws each bucket of each lane as a stacked column, the
height of each colour its share of that bucket.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from circuit.tracer.waits import WAIT_REASONS

from ..names import python_names
from ..style import WAIT_COLORS
from .base import _empty_figure

MAX_LANES = 40
HEIGHT = 0.8


def timeline_shares(run: Any, shares: pd.DataFrame, max_lanes: int = MAX_LANES) -> Figure:
    """One lane per thread (the busiest ``max_lanes`` by sampled time); in
    each time bucket, the share of the thread's time in each wait reason.
    ``shares``: pid, tid, start_ns, end_ns, wait, ns (query.scan)."""
    title = "Thread states over time (shares per time bucket)"
    if shares is None or shares.empty:
        return _empty_figure(title, "no thread samples in this run")
    t0 = int(run.meta.get("start_ns") or shares["start_ns"].min())
    per_thread = shares.groupby(["pid", "tid"])["ns"].sum()
    dropped = max(len(per_thread) - max_lanes, 0)
    lanes = per_thread.nlargest(max_lanes).index.sort_values()
    lane_of = {k: i for i, k in enumerate(lanes)}
    df = shares[[k in lane_of for k in zip(shares["pid"], shares["tid"], strict=True)]].copy()
    df["lane"] = [lane_of[k] for k in zip(df["pid"], df["tid"], strict=True)]
    total = df.groupby(["lane", "start_ns"])["ns"].transform("sum")
    df["share"] = df["ns"] / total
    order = {w: i for i, w in enumerate(WAIT_REASONS)}
    df["rank"] = df["wait"].map(order).fillna(len(order))
    df = df.sort_values(["lane", "start_ns", "rank"], kind="stable")
    # stacked: each wait's column starts where the ones before it ended
    df["bottom"] = df.groupby(["lane", "start_ns"])["share"].cumsum() - df["share"]
    x0 = (df["start_ns"].to_numpy() - t0) / 1e9
    x1 = (df["end_ns"].to_numpy() - t0) / 1e9
    y_top = df["lane"].to_numpy() - HEIGHT / 2 + df["bottom"].to_numpy() * HEIGHT
    h = df["share"].to_numpy() * HEIGHT
    fig = Figure(figsize=(11, 1.2 + 0.38 * len(lanes) + 0.6))
    ax = fig.add_subplot()
    waits = df["wait"].to_numpy()
    present = []
    for w in [*WAIT_REASONS, *sorted(set(waits) - set(WAIT_REASONS))]:
        sel = waits == w
        if not sel.any():
            continue
        present.append(w)
        rects = np.stack(
            [
                np.column_stack([x0[sel], y_top[sel]]),
                np.column_stack([x1[sel], y_top[sel]]),
                np.column_stack([x1[sel], y_top[sel] + h[sel]]),
                np.column_stack([x0[sel], y_top[sel] + h[sel]]),
            ],
            axis=1,
        )
        ax.add_collection(
            PolyCollection(rects, facecolors=WAIT_COLORS.get(w, "#000000"), edgecolors="none")
        )
    py = python_names(run)
    names = {}
    for (p, t), n in run_names(run).items():
        names[(p, t)] = py.get((p, t)) or n
    ax.set_yticks(range(len(lanes)), [f"{names.get((int(p), int(t)), '')} {t}" for p, t in lanes])
    ax.set_ylim(len(lanes) - 0.5, -0.7)
    ax.set_xlim(0, float(x1.max()) * 1.01 or 1)
    ax.set_xlabel("time since start (s)")
    ax.set_title(title + (f"  ({dropped} quieter threads not shown)" if dropped else ""))
    ax.legend(
        handles=[Patch(color=WAIT_COLORS.get(w, "#000000"), label=w) for w in present],
        title="wait reason",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    fig.tight_layout()
    return fig


def run_names(run: Any) -> dict[tuple[int, int], str]:
    """The kernel's name of each thread, from the summary the run cached, if any."""
    s = getattr(run, "_long_summary", None) or {}
    return {(int(t["pid"]), int(t["tid"])): str(t["name"]) for t in s.get("threads") or []}
