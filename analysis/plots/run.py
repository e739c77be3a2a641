"""Plots of one run: thread-state timeline, CPU, context switches, fds, the GIL.

Each takes a run (anything with ``.meta``, ``.threads``, ``.processes`` and
``.marks``, e.g. ``circuit.load(path)``); the GIL plot also draws a bench's
contention against thread count.  Timelines draw merged state intervals as
one PolyCollection per wait reason, never one artist per sample.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from circuit.tracer.waits import WAIT_REASONS

from .. import metrics as m
from ..gil import holder_note, holder_runs, holder_timeline, run_gil
from ..names import display_name, python_names, thread_label
from ..style import (
    FD_COLORS,
    GIL_HOLDER_COLORS,
    GIL_HOLDER_OTHER_COLOR,
    GIL_HOLDER_UNNAMED_COLOR,
    WAIT_COLORS,
)
from ..style import GIL_HELD_COLOR as HELD_COLOR
from .base import MODEL_COLORS, _empty_figure, _short, _styled, _subplots

MAX_LANES = 40
MAX_GIL_LANES = 4


def _time_axis(ax: Any, run: Any, *t_s: Any) -> None:
    """x from 0 to the end of the run (wall time or last point), never degenerate."""
    ends = [float(run.meta.get("wall_s") or 0.0)]
    ends += [float(np.max(t)) for t in t_s if len(t)]
    ax.set_xlim(0, max(ends) * 1.01 or 1.0)
    ax.set_xlabel("time since start (s)")


def _label(pid: int, tid: int, comm: str, python_name: str | None, multi_pid: bool) -> str:
    """``worker-0 (tid 24371)``: the Python name where a dump gave one (analysis/names.py)."""
    return thread_label(pid, tid, _short(display_name(comm, python_name), 24), None, multi_pid)


def _holder_colors(hold: pd.DataFrame) -> tuple[dict[int, str], list[int]]:
    """Colour per GIL holder (tid; 0: unnamed) and the holders with a colour of
    their own, busiest first; the rest share GIL_HOLDER_OTHER_COLOR."""
    held = (hold["end_ns"] - hold["start_ns"]).groupby(hold["holder"]).sum()
    named = [int(t) for t in held.sort_values(ascending=False, kind="stable").index if t > 0]
    own = named[: len(GIL_HOLDER_COLORS)]
    colors = {t: GIL_HOLDER_COLORS[i] for i, t in enumerate(own)}
    colors.update({t: GIL_HOLDER_OTHER_COLOR for t in named[len(own) :]})
    colors[0] = GIL_HOLDER_UNNAMED_COLOR
    return colors, own


def _rects(x0: np.ndarray, x1: np.ndarray, y: np.ndarray, h: float) -> np.ndarray:
    """(n, 4, 2) vertex array of rectangles [x0, x1] x [y - h/2, y + h/2]."""
    lo, hi = y - h / 2, y + h / 2
    return np.stack(
        [
            np.stack([x0, lo], 1),
            np.stack([x0, hi], 1),
            np.stack([x1, hi], 1),
            np.stack([x1, lo], 1),
        ],
        1,
    )


# -- 1. thread-state timeline --------------------------------------------------


@_styled
def timeline(run: Any, max_lanes: int = MAX_LANES, intervals: pd.DataFrame | None = None) -> Figure:
    """One lane per thread, coloured by wait reason; task spans and marks
    overlaid; a GIL-holder strip per process whose interpreter's GIL state was
    read (analysis/gil.py)."""
    th = run.threads
    title = "Thread states over time"
    if th.empty:
        return _empty_figure(title, "no thread samples in this run")
    per = m.run_period(run.meta)
    t0 = m.start_ns(run.meta, th)
    iv = m.state_intervals(th, per) if intervals is None else intervals
    # Busiest threads first by sampled time, but keep lanes in start order.
    lanes = (
        iv.groupby(["pid", "tid"], sort=False)
        .agg(first=("start_ns", "min"), total=("dur_ns", "sum"), name=("name", "last"))
        .reset_index()
    )
    dropped = 0
    if len(lanes) > max_lanes:
        dropped = len(lanes) - max_lanes
        lanes = lanes.nlargest(max_lanes, "total")
    lanes = lanes.sort_values(["pid", "first"]).reset_index(drop=True)
    hold = _holds(run, per)
    gil_pids = sorted(hold["pid"].unique())[:MAX_GIL_LANES]
    hold = hold[hold["pid"].isin(gil_pids)]
    n = len(lanes) + len(gil_pids)
    lane_of = {(p, t): i for i, (p, t) in enumerate(zip(lanes["pid"], lanes["tid"], strict=True))}
    fig = Figure(figsize=(11, 1.2 + 0.38 * n + 0.6))
    ax = fig.add_subplot()
    key = pd.MultiIndex.from_arrays([iv["pid"], iv["tid"]])
    lane_idx = pd.Series(lane_of)
    y = lane_idx.reindex(key).to_numpy()
    keep = ~np.isnan(y)
    iv, y = iv[keep], y[keep]
    x0 = (iv["start_ns"].to_numpy() - t0) / 1e9
    x1 = (iv["end_ns"].to_numpy() - t0) / 1e9
    present = []
    for w in WAIT_REASONS:
        sel = (iv["wait"] == w).to_numpy()
        if not sel.any():
            continue
        present.append(w)
        ax.add_collection(
            PolyCollection(
                _rects(x0[sel], x1[sel], y[sel], 0.7),
                facecolors=WAIT_COLORS[w],
                edgecolors="none",
                linewidths=0,
            )
        )
    others = sorted(set(iv["wait"]) - set(WAIT_REASONS))
    if others:
        sel = iv["wait"].isin(others).to_numpy()
        ax.add_collection(
            PolyCollection(
                _rects(x0[sel], x1[sel], y[sel], 0.7), facecolors="#000000", edgecolors="none"
            )
        )
    py = python_names(run)
    labels = [
        _label(p, t, nm, py.get((int(p), int(t))), lanes["pid"].nunique() > 1)
        for p, t, nm in zip(lanes["pid"], lanes["tid"], lanes["name"], strict=True)
    ]
    colors, own = _holder_colors(hold)
    if gil_pids:
        gy = len(lanes) + np.searchsorted(gil_pids, hold["pid"].to_numpy()).astype(float)
        hx0 = (hold["start_ns"].to_numpy() - t0) / 1e9
        hx1 = (hold["end_ns"].to_numpy() - t0) / 1e9
        ax.add_collection(
            PolyCollection(
                _rects(hx0, hx1, gy, 0.7),
                facecolors=[colors[t] for t in hold["holder"]],
                edgecolors="none",
                gid="gil-holders",
            )
        )
        multi = len(gil_pids) > 1 or lanes["pid"].nunique() > 1
        labels += [f"GIL holder {p}" if multi else "GIL holder" for p in gil_pids]
        ax.axhline(len(lanes) - 0.5, color="#333", lw=0.8, gid="separator")
    # Task spans: a thin black bar along the top of the task's thread lane.
    spans = m.task_spans(run.marks)
    has_tasks = False
    if len(spans):
        sk = pd.MultiIndex.from_arrays([spans["pid"], spans["tid"]])
        sy = lane_idx.reindex(sk).to_numpy()
        end = spans["end_ns"].fillna(iv["end_ns"].max() if len(iv) else 0).to_numpy()
        ok = ~np.isnan(sy)
        if ok.any():
            has_tasks = True
            s0 = (spans["start_ns"].to_numpy()[ok] - t0) / 1e9
            s1 = (end[ok] - t0) / 1e9
            ax.hlines(sy[ok] + 0.42, s0, s1, colors="black", lw=1.6)
            ax.plot(s0, sy[ok] + 0.42, "k|", ms=7)
    marks = run.marks
    other_marks = False
    if len(marks) and "name" in marks.columns:
        om = marks[~marks["name"].isin(["task-start", "task-end"])]
        mk = pd.MultiIndex.from_arrays([om["pid"], om["tid"]])
        my = lane_idx.reindex(mk).to_numpy()
        ok = ~np.isnan(my)
        if ok.any():
            other_marks = True
            ax.plot((om["t_ns"].to_numpy()[ok] - t0) / 1e9, my[ok] + 0.42, "kv", ms=5)
    ax.set_yticks(range(n), labels)
    ax.set_ylim(n - 0.5, -0.7)
    xmax = max(float(x1.max()) if len(x1) else 0.0, float(run.meta.get("wall_s") or 0.0))
    ax.set_xlim(0, xmax * 1.01 or 1)
    ax.set_xlabel("time since start (s)")
    ax.set_title(title + (f"  ({dropped} quieter threads not shown)" if dropped else ""))
    if not gil_pids and (th["wait"] == "gil").any():
        ax.annotate(
            "GIL holder not available: " + _short(holder_note(run.meta), 110),
            (0, 0),
            xycoords="axes fraction",
            xytext=(0, -32),
            textcoords="offset points",
            fontsize=8,
            color="#555",
            va="top",
        )
    handles = [Patch(color=WAIT_COLORS[w], label=w) for w in present]
    if others:
        handles.append(Patch(color="black", label="unknown"))
    if has_tasks:
        handles.append(plt.Line2D([], [], color="black", lw=1.6, marker="|", label="task span"))
    if other_marks:
        handles.append(plt.Line2D([], [], color="black", ls="", marker="v", label="mark"))
    if gil_pids:
        handles += _holder_handles(hold, colors, own, _thread_names(th, py))
    ax.legend(
        handles=handles,
        title="wait reason",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    ax.grid(axis="x", color="#ddd", lw=0.6)
    fig.tight_layout()
    return fig


def _thread_names(th: pd.DataFrame, py: dict[tuple[int, int], str]) -> dict[int, str]:
    """tid -> the thread's display name (tids are unique across a run's processes)."""
    comm = th.groupby(["pid", "tid"], observed=True)["name"].last()
    return {int(t): display_name(c, py.get((int(p), int(t)))) for (p, t), c in comm.items()}


def _holder_handles(
    hold: pd.DataFrame, colors: dict[int, str], own: list[int], names: dict[int, str]
) -> list[Patch]:
    """One legend entry per colour the holder lane draws, and no other."""
    handles = [
        Patch(color=colors[t], label=f"GIL held by {_short(names.get(t, 'thread'), 24)} (tid {t})")
        for t in own
    ]
    holders = set(map(int, hold["holder"]))
    rest = sorted(holders - set(own) - {0})
    if rest:
        handles.append(
            Patch(color=GIL_HOLDER_OTHER_COLOR, label=f"GIL held by {len(rest)} other threads")
        )
    if 0 in holders:
        handles.append(Patch(color=GIL_HOLDER_UNNAMED_COLOR, label="GIL held (thread not named)"))
    return handles


# -- 2. CPU per thread ---------------------------------------------------------


@_styled
def cpu(run: Any, max_threads: int = 8, rates: pd.DataFrame | None = None) -> Figure:
    """CPU per thread (cores) over time, with the process total."""
    title = "CPU use over time"
    th, pr = run.threads, run.processes
    if th.empty and pr.empty:
        return _empty_figure(title, "no CPU samples in this run")
    per = m.run_period(run.meta)
    t0 = m.start_ns(run.meta, th, pr)
    fig = Figure(figsize=(10, 4.2))
    ax = fig.add_subplot()
    if rates is None:
        rates = m.thread_rates(th, per, t0)
    py = python_names(run)
    if len(rates):
        top = rates.groupby(["pid", "tid"])["cpu"].sum().nlargest(max_threads).index
        multi = rates["pid"].nunique() > 1
        for pid, tid in top:
            r = rates[(rates["pid"] == pid) & (rates["tid"] == tid)]
            label = _label(pid, tid, r["name"].iloc[0], py.get((int(pid), int(tid))), multi)
            ax.plot(r["t_s"], r["cpu"], lw=1.2, label=label)
    pc = m.process_cpu(pr, per, t0)
    if len(pc):
        tot = pc.groupby("t_s")["cpu"].sum()
        ax.plot(tot.index, tot.to_numpy(), color="black", lw=2.2, label="all processes (total)")
    cpus = run.meta.get("cpus")
    if cpus:
        ax.axhline(cpus, color="#999", ls="--", lw=1)
        ax.text(0, cpus, f" {cpus} CPUs", va="bottom", color="#666", fontsize=9)
    _time_axis(ax, run, rates["t_s"] if len(rates) else [], pc["t_s"] if len(pc) else [])
    ax.set_ylabel("CPU (cores = CPU-seconds per second)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    n = rates.groupby(["pid", "tid"]).ngroups if len(rates) else 0
    title = "thread" if n <= max_threads else f"thread (busiest {max_threads} of {n})"
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title=title)
    ax.grid(color="#eee")
    fig.tight_layout()
    return fig


# -- 3. context switches ---------------------------------------------------------


@_styled
def context_switches(run: Any, rates: pd.DataFrame | None = None) -> Figure:
    """Context switches per second (all threads), voluntary vs involuntary."""
    title = "Context switches per second"
    th = run.threads
    if th.empty:
        return _empty_figure(title, "no thread samples in this run")
    per = m.run_period(run.meta)
    t0 = m.start_ns(run.meta, th)
    if rates is None:
        rates = m.thread_rates(th, per, t0)
    g = rates.groupby("t_s")[["ctx_vol", "ctx_invol"]].sum()
    fig = Figure(figsize=(10, 3.6))
    ax = fig.add_subplot()
    ax.plot(g.index, g["ctx_vol"], color="#1f77b4", lw=1.6, label="voluntary (thread blocked)")
    ax.plot(g.index, g["ctx_invol"], color="#d62728", lw=1.6, label="involuntary (preempted)")
    _time_axis(ax, run, g.index.to_numpy())
    ax.set_ylabel("switches per second")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(color="#eee")
    fig.tight_layout()
    return fig


# -- 4. open fds -----------------------------------------------------------------


@_styled
def fds(run: Any) -> Figure:
    """Open file descriptors over time (all processes), stacked by kind."""
    title = "Open file descriptors by kind"
    pr = run.processes
    t0 = m.start_ns(run.meta, pr)
    fc = m.fd_counts(pr, t0)
    if fc.empty:
        return _empty_figure(title, "no process samples (fd counts) in this run")
    kinds = [k for k in m.FD_KINDS if k in fc.columns and fc[k].max() > 0]
    if not kinds:
        return _empty_figure(title, "no open fds were recorded (fd scanning off or unreadable)")
    fig = Figure(figsize=(10, 3.8))
    ax = fig.add_subplot()
    ax.stackplot(
        fc["t_s"],
        *[fc[k] for k in kinds],
        labels=kinds,
        colors=[FD_COLORS[k] for k in kinds],
        step="post",
    )
    _time_axis(ax, run, fc["t_s"].to_numpy())
    ax.set_ylabel("open fds")
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="kind")
    ax.grid(color="#eee")
    fig.tight_layout()
    return fig


# -- 7. GIL -----------------------------------------------------------------------


def _holds(run: Any, per: int) -> pd.DataFrame:
    """Stretches during which one thread held the GIL (pid, start_ns, end_ns,
    holder; 0: held by a thread circuit could not name), from the
    interpreter's state: empty for processes without it."""
    runs = holder_runs(holder_timeline(getattr(run, "gil", None), run.threads, per))
    return runs[runs["holder"] >= 0].reset_index(drop=True)


@_styled
def gil(
    run: Any = None, contention: pd.DataFrame | None = None, figures: dict | None = None
) -> Figure:
    """The GIL (analysis/gil.py).  Left: for a bench (``contention``:
    bench.gil_vs_threads), contention vs thread count; for a run, each
    thread's time waiting for and holding the GIL (``figures``: the
    summary's ``gil``, computed from ``run`` when not given).  Right: the
    run's GIL hold times, where the interpreter's GIL state was read."""
    title = "The GIL"
    hold = pd.DataFrame()
    threads: list[dict] = []
    if run is not None and len(run.threads):
        figures = run_gil(run) if figures is None else figures
        threads = figures.get("threads") or []
        hold = _holds(run, m.run_period(run.meta))
    has_c = contention is not None and len(contention) > 0
    if hold.empty and not has_c and not threads:
        return _empty_figure(title, "no GIL data in this run (no Python threads)")
    if run is None:  # a bench: no run's hold times to show beside it
        fig, a = _subplots(1, 1, figsize=(6, 3.8))
        b = None
    else:
        fig, (a, b) = _subplots(1, 2, figsize=(10, 3.8))
    if has_c:
        assert contention is not None
        for i, (mo, g) in enumerate(
            contention.groupby(["workload", "model"] if "workload" in contention else "model")
        ):
            g = g.sort_values("threads")
            lab = " / ".join(map(str, mo)) if isinstance(mo, tuple) else str(mo)
            a.plot(
                g["threads"],
                g["gil_contention"],
                "o-",
                label=_short(lab, 24),
                color=MODEL_COLORS[i % len(MODEL_COLORS)],
            )
        a.set_xlabel("threads")
        a.xaxis.get_major_locator().set_params(integer=True)
        a.set_ylabel("GIL contention (share of thread time)")
        a.set_ylim(0, 1)
        a.legend(frameon=False, fontsize=8)
        a.grid(color="#eee")
        a.set_title("GIL contention vs threads", fontsize=11)
    elif threads:
        names = _thread_names(run.threads, python_names(run)) if run is not None else {}
        _thread_gil_bars(a, sorted(threads, key=lambda t: -t["time_s"])[:12], names)
    else:
        a.set_axis_off()
    if b is None:
        pass
    elif len(hold):
        ms = (hold["end_ns"] - hold["start_ns"]).to_numpy() / 1e6
        b.hist(ms, bins=min(30, max(5, len(ms) // 2)), color=HELD_COLOR, alpha=0.85)
        b.axvline(
            float(np.median(ms)),
            color="black",
            ls="--",
            lw=1,
            label=f"median {np.median(ms):.1f} ms",
        )
        b.set_xlabel("hold time (ms; resolution = sampling period)")
        b.set_ylabel("holds")
        b.yaxis.get_major_locator().set_params(integer=True)
        b.legend(frameon=False)
        b.grid(color="#eee")
    else:
        b.set_axis_off()
        note = _wrap(holder_note(run.meta).replace("$", r"\$"), 48)
        why = "GIL holder not available:\n" + note
        b.text(0.5, 0.5, why, ha="center", va="center", color="#555", fontsize=9)
    if b is not None:
        b.set_title("GIL hold times", fontsize=11)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def _thread_gil_bars(ax: Any, threads: list[dict], names: dict[int, str]) -> None:
    """One bar per thread: time waiting for the GIL, holding it (when known), the rest."""
    y = np.arange(len(threads))
    wait = np.array([t["wait_s"] for t in threads])
    held = np.array([t["held_s"] or 0.0 for t in threads])
    rest = np.maximum(np.array([t["time_s"] for t in threads]) - wait - held, 0.0)
    ax.barh(y, wait, color=WAIT_COLORS["gil"], label="waiting for the GIL")
    if any(t["held_s"] is not None for t in threads):
        ax.barh(y, held, left=wait, color=HELD_COLOR, label="holding the GIL")
    ax.barh(y, rest, left=wait + held, color="#dddddd", label="other")
    multi = len({t["pid"] for t in threads}) > 1
    labels = [
        _label(t["pid"], t["tid"], names.get(int(t["tid"]), "thread"), None, multi) for t in threads
    ]
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    # below the bars: inside, it hides the thread it lands on
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    ax.set_title("GIL per thread", fontsize=11)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text
