"""Plots on hand-built runs: every function returns a Figure that saves as PNG and SVG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from circuit.analysis import bench as B
from circuit.analysis import plots
from tests.support.report_data import (
    GIL_ROWS_FOR_BENCH,
    GIL_TABLE_FOR_BENCH,
    T0,
    fake_run,
    gil_table,
    process_frame,
    thread_frame,
)

ROWS = [
    (t, 1, tid, f"w{tid}", st, w, -1 if w == "running" else 35, t // 2, t // 10, 0)
    for tid in (1, 2)
    for t in range(0, 200, 10)
    for st, w in [("R", "running") if (t // 50 + tid) % 2 else ("S", "sleep")]
]
PROCS = process_frame(
    [
        {"t_ms": t, "pid": 1, "cpu_ms": t, "fds_file": 3, "fds_socket": t // 40, "fds_epoll": 1}
        for t in range(0, 200, 10)
    ]
)
MARKS = pd.DataFrame(
    {
        "t_ns": [T0 + 10_000_000, T0 + 90_000_000, T0 + 50_000_000],
        "pid": [1, 1, 1],
        "tid": [1, 1, 2],
        "name": ["task-start", "task-end", "phase"],
        "field_task": [0, 0, None],
    }
)


def _texts(fig: Figure) -> str:
    return " ".join(t.get_text() for t in fig.findobj(plt.Text))


def _check_saves(fig: Figure, tmp_path: Path, stem: str) -> None:
    png, svg = plots.save(fig, tmp_path / stem)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert svg.read_text().lstrip().startswith("<?xml") and "</svg>" in svg.read_text()
    plt.close(fig)


@pytest.mark.parametrize("fn", ["timeline", "cpu", "context_switches", "fds"])
def test_run_plots(fn: str, tmp_path: Path) -> None:
    run = fake_run(thread_frame(ROWS), PROCS, MARKS)
    fig = getattr(plots, fn)(run)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time since start (s)"
    assert ax.get_title()
    _check_saves(fig, tmp_path, fn)


def test_timeline_draws_intervals_by_wait_reason_with_legend() -> None:
    run = fake_run(thread_frame(ROWS), PROCS, MARKS)
    fig = plots.timeline(run)
    ax = fig.axes[0]
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    # one collection per wait reason present, holding merged intervals, not samples
    assert len(polys) == 2
    assert sum(len(p.get_paths()) for p in polys) < len(ROWS) / 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"running", "sleep", "task span", "mark"} <= set(legend)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["w1 (tid 1)", "w2 (tid 2)"]
    assert "GIL holder" not in _texts(fig)
    plt.close(fig)


def test_timeline_gil_strip_when_the_interpreter_said_who_held_it() -> None:
    run = fake_run(thread_frame(GIL_ROWS_FOR_BENCH))
    run.gil = gil_table(GIL_TABLE_FOR_BENCH)
    fig = plots.timeline(run)
    assert "GIL holder" in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"GIL held by t1 (tid 1)", "GIL held by t2 (tid 2)"} <= set(legend)
    plt.close(fig)
    # from the futex evidence alone nobody is named the holder
    fig = plots.timeline(fake_run(thread_frame(GIL_ROWS_FOR_BENCH)))
    assert "GIL holder" not in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "GIL holder not available" in _texts(fig)
    plt.close(fig)


def test_timeline_caps_lanes() -> None:
    rows = [(0, 1, tid, "t", "S", "sleep", 35, 0, 0, 0) for tid in range(60)]
    fig = plots.timeline(fake_run(thread_frame(rows)), max_lanes=10)
    assert len(fig.axes[0].get_yticklabels()) == 10
    assert "50 quieter threads not shown" in fig.axes[0].get_title()
    plt.close(fig)


def test_gil_plot_without_data_says_so() -> None:
    fig = plots.gil(fake_run(thread_frame(ROWS)))
    assert "no GIL data in this run" in _texts(fig)
    plt.close(fig)
    fig = plots.gil(fake_run(thread_frame(GIL_ROWS_FOR_BENCH)))
    assert "GIL per thread" in _texts(fig)
    assert "GIL holder not available" in _texts(fig) and "hold time (ms" not in _texts(fig)
    plt.close(fig)
    run = fake_run(thread_frame(GIL_ROWS_FOR_BENCH))
    run.gil = gil_table(GIL_TABLE_FOR_BENCH)
    fig = plots.gil(run)
    assert "hold time (ms" in _texts(fig) and "holding the GIL" in _texts(fig)
    plt.close(fig)


def test_empty_run_plots_say_so() -> None:
    run = fake_run(thread_frame([]))
    for fn in (plots.timeline, plots.cpu, plots.context_switches, plots.fds):
        fig = fn(run)
        assert "no " in _texts(fig)
        plt.close(fig)


def _results() -> pd.DataFrame:
    rows = [
        {"workload": w, "model": m, "tasks": n, "wall_s": base * n / 2, "cpu_s": 0.1 * n}
        for w in ("io", "cpu")
        for m, base in (("sequential", 2.0), ("threads", 1.0), ("asyncio", 0.8))
        for n in (2, 4, 8)
    ]
    return pd.DataFrame(rows)


def test_bench_plots(tmp_path: Path) -> None:
    res = _results()
    fig = plots.model_comparison(B.model_comparison(res))
    assert len(fig.axes) == 2 and "8 tasks" in _texts(fig)
    _check_saves(fig, tmp_path, "models")
    fig = plots.scaling(B.scaling(res))
    assert fig.axes[0].get_xlabel() == "tasks"
    assert len(fig.axes[0].get_lines()) == 3  # one line per model
    _check_saves(fig, tmp_path, "scaling")
    split = pd.DataFrame(
        {
            "workload": ["io", "io"],
            "model": ["threads", "asyncio"],
            "wait_running_s": [0.1, 0.1],
            "wait_sleep_s": [2.0, 0.0],
            "wait_poll_s": [0.0, 1.0],
            "cpu_s": [0.1, 0.08],
        }
    )
    fig = plots.sleep_split(split)
    assert all(w in _texts(fig) for w in ("running", "sleep", "poll", "CPU used"))
    _check_saves(fig, tmp_path, "sleep")
    gvt = pd.DataFrame(
        {
            "workload": "cpu",
            "model": "threads",
            "threads": [1, 2, 4],
            "gil_contention": [0, 0.4, 0.7],
        }
    )
    fig = plots.gil(None, gvt)
    assert "GIL contention vs threads" in _texts(fig)
    _check_saves(fig, tmp_path, "gil")


def test_bench_plots_degrade() -> None:
    for fig in (
        plots.model_comparison(pd.DataFrame()),
        plots.scaling(B.scaling(_results()[_results()["tasks"] == 2])),
        plots.sleep_split(pd.DataFrame()),
        plots.gil(None, pd.DataFrame()),
    ):
        assert isinstance(fig, Figure)
        plt.close(fig)


def test_labels_from_the_target_are_not_mathtext(tmp_path: Path) -> None:
    # a thread name with an unbalanced TeX expression would crash mathtext at draw time
    rows = [(t, 1, 3, "a$\\frac{x$", "R", "running", -1, t, 0, 0) for t in (0, 10, 20)]
    for fn in (plots.timeline, plots.cpu):
        fig = fn(fake_run(thread_frame(rows)))
        _check_saves(fig, tmp_path, fn.__name__)


def test_plots_leave_global_matplotlib_settings_alone() -> None:
    import matplotlib

    before = dict(matplotlib.rcParams)
    fig = plots.timeline(fake_run(thread_frame(ROWS)))
    assert not fig.axes[0].spines["top"].get_visible()  # styled inside
    assert dict(matplotlib.rcParams) == before
    assert plt.get_fignums() == []  # not registered with pyplot


@pytest.mark.parametrize("backend", ["pdf", "svg"])
def test_importing_and_plotting_keep_the_users_backend(backend: str, tmp_path: Path) -> None:
    # A fresh interpreter: in this one pyplot has long chosen its backend.
    code = (
        "import matplotlib, sys\n"
        "from circuit.analysis import plots\n"
        "assert matplotlib.get_backend() == sys.argv[1], ('import', matplotlib.get_backend())\n"
        "fig = plots._empty_figure('t', 'm')\n"
        "plots.save(fig, sys.argv[2])\n"
        "assert matplotlib.get_backend() == sys.argv[1], ('plot', matplotlib.get_backend())\n"
    )
    env = {**os.environ, "MPLBACKEND": backend}
    p = subprocess.run(
        [sys.executable, "-c", code, backend, str(tmp_path / "f")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "f.png").stat().st_size > 0


# -- timeline colours: every colour drawn is in the legend; holders never look like waits

# One thread per wait reason (and one in a reason the plots do not know), 8
# named GIL holders and an unnamed one: more holders than the palette has colours.
_WAITS = ["running", "runnable", "sleep", "lock", "gil", "poll", "socket", "pipe", "disk"]
COLOUR_ROWS = [
    (t, 1, 10 + i, f"w{i}", "S", w, 0, t // 2, 0, 0)
    for i, w in enumerate([*_WAITS, "child", "other", "mystery"])
    for t in range(0, 200, 10)
]
COLOUR_GIL = [
    (t, 1, 1, 10 + (t // 10) % 9 if (t // 10) % 9 < 8 else 0, t) for t in range(0, 200, 10)
]


def _hex(c) -> str:
    from matplotlib.colors import to_hex

    return to_hex(c, keep_alpha=False)


def _drawn_colours(ax) -> set[str]:
    """Face colours of the filled artists, colours of the lines and markers
    (the lane separator is structure, not data)."""
    from matplotlib.collections import LineCollection

    out: set[str] = set()
    for c in ax.collections:
        if isinstance(c, PolyCollection):
            out |= {_hex(f) for f in c.get_facecolors()}
            if max(c.get_linewidths(), default=0) > 0:
                out |= {_hex(e) for e in c.get_edgecolors() if e[3] > 0}
        elif isinstance(c, LineCollection):
            out |= {_hex(e) for e in c.get_colors()}
    for ln in ax.lines:
        if ln.get_gid() != "separator":
            out |= {_hex(ln.get_color()), _hex(ln.get_markerfacecolor())}
    return out


def _legend_colours(ax) -> set[str]:
    out: set[str] = set()
    for h in ax.get_legend().legend_handles:
        if isinstance(h, plt.Line2D):
            out |= {_hex(h.get_color()), _hex(h.get_markerfacecolor())}
        else:
            out.add(_hex(h.get_facecolor()))
    return out


def test_timeline_draws_only_legend_colours_and_holders_never_reuse_wait_colours() -> None:
    from circuit.analysis.style import WAIT_COLORS

    run = fake_run(thread_frame(COLOUR_ROWS), marks=MARKS.assign(tid=[10, 10, 11]))
    run.gil = gil_table(COLOUR_GIL)
    fig = plots.timeline(run)
    ax = fig.axes[0]
    drawn, legend = _drawn_colours(ax), _legend_colours(ax)
    assert drawn <= legend, f"drawn but not in the legend: {drawn - legend}"
    waits = {_hex(c) for c in WAIT_COLORS.values()}
    assert waits <= drawn  # every reason, runnable included, was drawn...
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert set(WAIT_COLORS) <= labels  # ...and named
    (holders,) = [c for c in ax.collections if c.get_gid() == "gil-holders"]
    held = {_hex(f) for f in holders.get_facecolors()}
    assert len(held) >= 7  # 5 own colours, the rest, the unnamed holder
    assert not held & waits
    assert "GIL held by 3 other threads" in labels
    assert "GIL held (thread not named)" in labels
    plt.close(fig)


def test_holder_palette_is_disjoint_from_wait_colours() -> None:
    from circuit.analysis import style

    holders = {*style.GIL_HOLDER_COLORS, style.GIL_HOLDER_OTHER_COLOR}
    holders.add(style.GIL_HOLDER_UNNAMED_COLOR)
    assert len(holders) == len(style.GIL_HOLDER_COLORS) + 2
    assert not {_hex(c) for c in holders} & {_hex(c) for c in style.WAIT_COLORS.values()}
