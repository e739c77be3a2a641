"""Plots of a comparison (analysis/compare.py): where each run's thread time
went, and CPU and open fds of every run on one time axis."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from circuit.tracer.waits import WAIT_REASONS

from .. import metrics as m
from ..style import WAIT_COLORS
from .base import MODEL_COLORS, _empty_figure, _short, _styled, _subplots


@_styled
def wait_bars(figs: list[dict[str, float]], labels: list[str]) -> Figure:
    """One stacked bar per run: thread-seconds in each wait reason
    (``figs``: :func:`circuit.analysis.compare.figures` of each run)."""
    title = "Where thread time went, per run"
    reasons = [w for w in WAIT_REASONS if any(f.get(f"wait_{w}_s", 0.0) > 0 for f in figs)]
    if not reasons:
        return _empty_figure(title, "no thread samples in these runs")
    fig, ax = _subplots(figsize=(max(5.0, 1.3 * len(labels) + 3.5), 4.2))
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for w in reasons:
        v = np.array([f.get(f"wait_{w}_s", 0.0) for f in figs])
        ax.bar(x, v, 0.6, bottom=bottom, color=WAIT_COLORS.get(w, "#000"), label=w)
        bottom += v
    ax.set_xticks(x, [_short(lab, 18) for lab in labels], rotation=15 if len(labels) > 3 else 0)
    ax.set_ylabel("thread-seconds")
    ax.set_title(title)
    ax.grid(axis="y", color="#eee")
    handles, names = ax.get_legend_handles_labels()
    ax.legend(
        handles[::-1],
        names[::-1],
        title="state",
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    fig.tight_layout()
    return fig


@_styled
def timelines(runs: list[Any], labels: list[str]) -> Figure:
    """CPU (cores, all processes) and open fds (all processes) of each run
    over the time since its own start, overlaid: one colour per run."""
    title = "CPU and open fds over time, runs overlaid"
    if not any(len(r.processes) for r in runs):
        return _empty_figure(title, "no process samples in these runs")
    fig, (a, b) = _subplots(2, 1, figsize=(10, 6), sharex=True)
    end = 0.0
    for i, (run, lab) in enumerate(zip(runs, labels, strict=True)):
        color = MODEL_COLORS[i % len(MODEL_COLORS)]
        pr = run.processes
        t0 = m.start_ns(run.meta, pr)
        pc = m.process_cpu(pr, m.run_period(run.meta), t0)
        if len(pc):
            tot = pc.groupby("t_s")["cpu"].sum()
            a.plot(tot.index, tot.to_numpy(), color=color, lw=1.6, label=_short(lab, 24))
        fc = m.fd_counts(pr, t0)
        if len(fc):
            b.step(fc["t_s"], fc["total"], where="post", color=color, lw=1.6, label=_short(lab, 24))
            end = max(end, float(fc["t_s"].max()))
        end = max(end, float(run.meta.get("wall_s") or 0.0))
    a.set_ylabel("CPU (cores)")
    a.set_ylim(bottom=0)
    a.set_title("CPU, all processes", fontsize=11)
    a.grid(color="#eee")
    a.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="run")
    b.set_ylabel("open fds")
    b.set_ylim(bottom=0)
    b.yaxis.get_major_locator().set_params(integer=True)
    b.set_title("open file descriptors, all processes", fontsize=11)
    b.set_xlabel("time since the run's start (s)")
    b.set_xlim(0, end * 1.01 or 1.0)
    b.grid(color="#eee")
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig
