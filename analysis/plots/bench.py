"""Plots of a bench: models compared, scaling with tasks, where thread time went.

Each takes a frame from :mod:`circuit.analysis.bench`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from circuit.tracer.waits import WAIT_REASONS

from ..style import WAIT_COLORS
from .base import MODEL_COLORS, _empty_figure, _short, _styled, _subplots

# -- 5. model comparison ---------------------------------------------------------


@_styled
def model_comparison(cmp: pd.DataFrame) -> Figure:
    """Wall vs CPU seconds per model, one panel per workload (bench.model_comparison).
    With several task counts, the largest one is shown."""
    title = "Wall time vs CPU time per model"
    if cmp.empty or "model" not in cmp.columns or "wall_s" not in cmp.columns:
        return _empty_figure(title, "no bench results with model and wall_s")
    df = cmp
    if "tasks" in df.columns and df["tasks"].notna().any():
        df = df[
            df["tasks"]
            == df.groupby("workload" if "workload" in df else "model")["tasks"].transform("max")
        ]
    works = list(df["workload"].unique()) if "workload" in df.columns else [None]
    fig, axes = _subplots(
        1, len(works), figsize=(max(5, 3.6 * len(works)), 4), squeeze=False, sharey=False
    )
    for ax, wk in zip(axes[0], works, strict=True):
        d = df if wk is None else df[df["workload"] == wk]
        models = list(d["model"])
        x = np.arange(len(models))
        bars = ax.bar(x - 0.2, d["wall_s"], 0.4, label="wall", color="#4c72b0")
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        if "cpu_s" in d.columns:
            bars = ax.bar(x + 0.2, d["cpu_s"], 0.4, label="CPU", color="#dd8452")
            ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.set_xticks(x, [_short(s, 12) for s in models], rotation=20)
        sub = wk if wk is not None else ""
        if "tasks" in d.columns and d["tasks"].notna().any():
            sub += f" ({int(d['tasks'].max())} tasks)"
        ax.set_title(_short(sub, 40), fontsize=11)
        ax.set_ylabel("seconds (median)")
        ax.grid(axis="y", color="#eee")
    axes[0][0].legend(frameon=False)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


# -- 6. scaling -------------------------------------------------------------------


@_styled
def scaling(sc: pd.DataFrame) -> Figure:
    """Wall time vs number of tasks, one line per model, one panel per workload."""
    title = "Scaling: wall time vs tasks"
    if sc.empty or sc["tasks"].nunique() < 2:
        return _empty_figure(title, "needs a bench with at least two task counts")
    works = list(sc["workload"].unique()) if "workload" in sc.columns else [None]
    fig, axes = _subplots(1, len(works), figsize=(max(5, 3.8 * len(works)), 4), squeeze=False)
    models = sorted(sc["model"].astype(str).unique())
    colors = {mo: MODEL_COLORS[i % len(MODEL_COLORS)] for i, mo in enumerate(models)}
    for ax, wk in zip(axes[0], works, strict=True):
        d = sc if wk is None else sc[sc["workload"] == wk]
        for mo, g in d.groupby("model"):
            g = g.sort_values("tasks")
            ax.plot(g["tasks"], g["wall_s"], "o-", color=colors[str(mo)], label=_short(mo, 16))
        ax.set_xlabel("tasks")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("wall time (s, median)")
        ax.set_ylim(bottom=0)
        ax.set_title(_short(wk or "", 40), fontsize=11)
        ax.grid(color="#eee")
    axes[0][-1].legend(frameon=False, title="model", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


# -- 8. sleep state -----------------------------------------------------------------


@_styled
def sleep_split(split: pd.DataFrame) -> Figure:
    """Per model: thread-seconds running vs each sleep reason (stacked), with
    the CPU seconds used as a black marker (bench.sleep_split)."""
    title = "Where thread time went, per model (vs CPU used)"
    cols = [f"wait_{w}_s" for w in WAIT_REASONS if f"wait_{w}_s" in split.columns]
    if split.empty or not cols:
        return _empty_figure(title, "no run folders with thread samples in this bench")
    cols = [c for c in cols if split[c].sum() > 0]
    works = list(split["workload"].unique()) if "workload" in split.columns else [None]
    fig, axes = _subplots(
        1, len(works), figsize=(max(5.5, 3.8 * len(works) + 1.5), 4.2), squeeze=False
    )
    for ax, wk in zip(axes[0], works, strict=True):
        d = split if wk is None else split[split["workload"] == wk]
        x = np.arange(len(d))
        bottom = np.zeros(len(d))
        for c in cols:
            w = c[5:-2]
            v = d[c].to_numpy()
            ax.bar(x, v, 0.6, bottom=bottom, color=WAIT_COLORS.get(w, "#000"), label=w)
            bottom += v
        if "cpu_s" in d.columns:
            ax.plot(x, d["cpu_s"], "D", color="black", ms=7, label="CPU used")
        ax.set_xticks(x, [_short(s, 12) for s in d["model"]], rotation=20)
        ax.set_ylabel("thread-seconds (median run)")
        ax.set_title(_short(wk or "", 40), fontsize=11)
        ax.grid(axis="y", color="#eee")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="center right", frameon=False, title="state")
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig
