"""The figures of a live view (``circuit top``): one window of a run, per
process and per thread, from the functions ``circuit summary`` uses.

:func:`live_view` takes a window's frames (analysis/live_window.py) and
returns a plain dict, the view model the renderers draw
(analysis/top_render.py).  Every figure over the window is a summary figure
of those frames, as ``circuit summary`` computes it for a run that was
attached for the window's length: time by wait reason
(:func:`~.summary.time_by`, with the run-queue share of
analysis/runnable.py), the counters' deltas
(:func:`~.summary.counter_deltas`), a process's CPU
(:func:`~.summary.process_figures`), the GIL (:func:`~.gil.gil_metrics`)
and event-loop stalls (:func:`~.loops.loop_figures`).  Only the "now"
columns (state, wait reason, GIL holder) are the newest sample's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from circuit.tracer.schema import FD_KIND_COLUMNS, THREAD_FIELDS
from circuit.tracer.waits import WAIT_REASONS

from .gil import classify_gil, gil_metrics
from .live_window import Frames
from .pyspy import thread_names
from .summary import counter_deltas, own_cpu_ns, process_figures, time_by, with_durations

THREAD_COLUMNS = [c for c, _ in THREAD_FIELDS]
_SAME = [c for c in THREAD_COLUMNS if c != "t_ns"]  # what a repeated sample repeats


def collapse_repeats(threads: pd.DataFrame) -> pd.DataFrame:
    """``threads`` sorted by (pid, tid, t_ns), without the samples that only
    repeat the one before them (same state, wait, syscall and counters),
    keeping each thread's first and last sample.

    An idle thread's samples are all alike: with_durations gives the kept
    sample the time up to the next kept one, which is the sum of the
    repeated samples' durations; no counter moved between them, so their
    run-queue time is nil and every total (time by state and wait, the
    counters' deltas, GIL waits) is the same, from far fewer rows.  (Event
    loops' busy stretches look at each sample's neighbours: loop_figures
    takes the whole frame.)"""
    if len(threads) < 3:
        return threads
    df = threads.sort_values(["pid", "tid", "t_ns"], kind="stable").reset_index(drop=True)
    n = len(df)
    same = np.ones(n - 1, dtype=bool)  # row i+1 repeats row i
    for c in _SAME:
        col = df[c]
        v = (
            col.cat.codes.to_numpy()
            if isinstance(col.dtype, pd.CategoricalDtype)
            else col.to_numpy()
        )
        same &= v[1:] == v[:-1]
        if not same.any():
            return df
    pid, tid = df["pid"].to_numpy(), df["tid"].to_numpy()
    last = np.ones(n, dtype=bool)  # the thread's last sample
    last[:-1] = (pid[1:] != pid[:-1]) | (tid[1:] != tid[:-1])
    drop = np.zeros(n, dtype=bool)
    drop[1:] = same & ~last[1:]
    return df[~drop].reset_index(drop=True)


def _shares(by_wait: pd.DataFrame) -> dict[tuple[int, int], dict[str, float]]:
    """(pid, tid) -> share of its sampled time per wait reason (the nonzero
    ones, in WAIT_REASONS order)."""
    names = [w for w in WAIT_REASONS if w in by_wait.columns]
    names += [c for c in by_wait.columns if c not in names]
    m = by_wait[names].to_numpy(dtype=float)
    total = m.sum(axis=1)
    frac = m / np.where(total > 0, total, 1.0)[:, None]
    out = {}
    for (pid, tid), row in zip(by_wait.index, frac.tolist(), strict=True):
        out[(int(pid), int(tid))] = {
            w: round(v, 4) for w, v in zip(names, row, strict=True) if v > 0
        }
    return out


def now_rows(
    latest: dict[int, tuple[int, list[tuple]]],
    maps: pd.DataFrame,
    known: dict[tuple[int, int], str] | None = None,
) -> dict[tuple[int, int], tuple[str, str, str]]:
    """(pid, tid) -> (name, state, wait) of the newest sample of each process
    (tracer/live.py ``Latest.threads``), futex waits on the GIL as ``gil``.

    ``known``: (pid, futex address) -> wait, as the window classified them
    (the view's ``futex_waits``); a futex it has not seen is classified here
    (:func:`~.gil.classify_gil`, on those rows only)."""
    known = known or {}
    out: dict[tuple[int, int], tuple[str, str, str]] = {}
    unseen = []
    for t_ns, rows in latest.values():
        for r in rows:
            pid, tid, name, state, wait = r[0], r[1], r[2], r[3], r[4]
            if wait == "lock":
                wait = known.get((pid, r[_ARG0]), "")
                if not wait:
                    unseen.append((t_ns, *r))
                    continue
            out[(pid, tid)] = (str(name), str(state), str(wait))
    if unseen:
        df = pd.DataFrame(unseen, columns=THREAD_COLUMNS)
        if len(maps):
            df = classify_gil(df, maps)
        for p, t, n, st, w in zip(
            df["pid"], df["tid"], df["name"], df["state"], df["wait"], strict=True
        ):
            out[(int(p), int(t))] = (str(n), str(st), str(w))
    return out


_ARG0 = THREAD_COLUMNS.index("arg0") - 1  # in a row without t_ns


def _text_column(col: pd.Series) -> list[str]:
    """A string column as a list of str, through the categories when it has them."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in col.cat.categories]
        return [cats[c] if c >= 0 else "" for c in col.cat.codes.to_numpy().tolist()]
    return [str(v) for v in col.tolist()]


def _last_rows(df: pd.DataFrame, key: list[str]) -> np.ndarray:
    """Positions of the last row of each ``key`` group (rows in any order),
    in the order of those rows, as drop_duplicates(keep="last") has them."""
    codes = np.zeros(len(df), dtype=np.int64)
    for k in key:
        _, inv = np.unique(df[k].to_numpy(), return_inverse=True)
        codes = codes * (int(inv.max()) + 1 if len(inv) else 1) + inv
    _, first_rev = np.unique(codes[::-1], return_index=True)
    return np.sort(len(df) - 1 - first_rev)


def futex_waits(threads: pd.DataFrame) -> dict[tuple[int, int], str]:
    """(pid, futex address) -> ``lock`` or ``gil``, from classified samples."""
    col = threads["wait"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in col.cat.categories]
        ids = [cats.index(w) for w in ("lock", "gil") if w in cats]
        mine = np.isin(col.cat.codes.to_numpy(), ids)
    else:
        mine = col.astype(str).isin(["lock", "gil"]).to_numpy()
    sub = threads[mine]
    if len(sub) > 64:
        sub = sub.drop_duplicates(["pid", "arg0"])
    waits = _text_column(sub["wait"])
    keys = zip(sub["pid"].to_numpy().tolist(), sub["arg0"].to_numpy().tolist(), strict=True)
    return dict(zip(keys, waits, strict=True))


def live_view(meta: dict[str, Any], fr: Frames, pids: list[int] | None = None) -> dict[str, Any]:
    """The view model of one window: per process (those in ``pids``, the
    traced ones now, when given) its figures, its GIL and loop lines and
    its threads' rows, whose state and wait are those of the window's last
    sample (:func:`apply_now` puts fresher ones in).

    ``meta``: the run's (rate, machine, gil_sources, loop threshold)."""
    from .summary import period_ns

    per = period_ns({"rate_hz_requested": meta.get("rate_hz_requested")})
    wall_ns = max(fr.end_ns - fr.start_ns, 1)
    # Collapsed first: classifying reads each sample's futex address and
    # maps snapshot, which a repeated sample repeats.
    df = collapse_repeats(fr.threads)
    if len(df) and len(fr.maps):
        df = classify_gil(df, fr.maps)
    df = with_durations(df, per) if len(df) else df
    proc_rows: list[dict[str, Any]] = []
    by_thread: dict[tuple[int, int], dict[str, Any]] = {}
    thread_cpu: dict[int, float] = {}
    if len(df):
        tdelta = counter_deltas(df, fr.start_ns, attached=True)
        cpu = own_cpu_ns(tdelta)
        thread_cpu = cpu.groupby(level="pid").sum().to_dict()
        shares = _shares(time_by(df, "wait"))
        last = df.iloc[_last_rows(df, ["pid", "tid"])]
        if not np.array_equal(
            last[["pid", "tid"]].to_numpy(), np.array(tdelta.index.tolist()).reshape(-1, 2)
        ):  # (the same rows as counter_deltas takes, in its order: never seen otherwise)
            last = last.set_index(["pid", "tid"]).reindex(tdelta.index).reset_index()
        py = thread_names(fr.stacks)
        switches = (tdelta["ctx_vol"] + tdelta["ctx_invol"]).clip(lower=0).to_numpy()
        delay = tdelta["run_delay_ns"].clip(lower=0).to_numpy()
        columns = zip(
            tdelta.index,
            cpu.to_numpy().tolist(),
            switches.tolist(),
            delay.tolist(),
            _text_column(last["name"]),
            _text_column(last["state"]),
            _text_column(last["wait"]),
            last["t_ns"].to_numpy().tolist(),
            strict=True,
        )
        for key, c, sw, rd, name, state, wait, t_ns in columns:
            k = (int(key[0]), int(key[1]))
            by_thread[k] = {
                "pid": k[0],
                "tid": k[1],
                "name": name,
                "python_name": py.get(k),
                "state": state,
                "wait": wait,
                "shares": shares.get(k, {}),
                "cpu_pct": round(100.0 * c / wall_ns, 2),
                "csw_per_s": round(sw * 1e9 / wall_ns, 1),
                "runq_pct": round(100.0 * rd / wall_ns, 2),
                "last_ns": int(t_ns),
            }
    plist, _, _ = process_figures(fr.processes, fr.procs, thread_cpu, fr.start_ns, True)
    gil = gil_metrics(df, fr.gil, fr.maps, per, meta.get("gil_sources")) if len(df) else {}
    gil_by_pid = {p["pid"]: p for p in gil.get("processes", [])}
    loops = _loops(meta, fr) if len(fr.threads) else []
    lp_cols = ["pid", "num_threads", "rss_bytes", "fds", *FD_KIND_COLUMNS]
    newest = fr.processes.iloc[_last_rows(fr.processes, ["pid"])][lp_cols].to_numpy().tolist()
    last_p = {int(r[0]): dict(zip(lp_cols, map(int, r), strict=True)) for r in newest}
    gil_rows = fr.gil.iloc[_last_rows(fr.gil, ["pid"])].to_numpy().tolist() if len(fr.gil) else []
    newest_gil = {int(r[1]): tuple(int(v) for v in r) for r in gil_rows}
    for p in plist:
        pid = p["pid"]
        if pids is not None and pid not in pids:
            continue  # exited: its last figures are in the run folder
        lp = last_p[pid]
        mine = [t for k, t in by_thread.items() if k[0] == pid]
        proc_rows.append(
            {
                "pid": pid,
                "cmdline": p["cmdline"],
                "cpu_pct": round(100.0 * p["cpu_s"] * 1e9 / wall_ns, 2),
                "threads": int(lp["num_threads"]),
                "rss_bytes": int(lp["rss_bytes"]),
                "fds": int(lp["fds"]),
                "fds_by_kind": {c[4:]: int(lp[c]) for c in FD_KIND_COLUMNS if int(lp[c])},
                "gil": _gil_line(gil_by_pid.get(pid), newest_gil.get(pid), by_thread),
                "loops": [lp_ for lp_ in loops if lp_["pid"] == pid],
                "thread_rows": mine,
            }
        )
    return {
        "window_s": round(wall_ns / 1e9, 3),
        "start_ns": fr.start_ns,
        "end_ns": fr.end_ns,
        "rate_hz": meta.get("rate_hz_requested"),
        "processes": proc_rows,
        "futex_waits": futex_waits(df) if len(df) else {},  # for now_rows
    }


def apply_now(
    view: dict[str, Any],
    fresh: dict[tuple[int, int], tuple[str, str, str]],
    latest_gil: dict[int, tuple],
) -> dict[str, Any]:
    """``view`` with each thread's state and wait from ``fresh`` (the newest
    rows, :func:`now_rows`) and each GIL's holder from ``latest_gil`` (pid
    -> newest gil row); the window's figures stay."""
    procs = []
    for p in view["processes"]:
        rows = []
        for t in p["thread_rows"]:
            f = fresh.get((p["pid"], t["tid"]))
            rows.append(t if f is None else {**t, "name": f[0], "state": f[1], "wait": f[2]})
        by_thread = {(p["pid"], t["tid"]): t for t in rows}
        gil = p["gil"]
        newest = latest_gil.get(p["pid"])
        if gil is not None and newest is not None:
            gil = {**gil, "holder": _holder(newest, by_thread)}
        procs.append({**p, "thread_rows": rows, "gil": gil})
    return {**view, "processes": procs}


def _holder(newest: tuple, by_thread: dict[tuple[int, int], Any]) -> dict[str, Any]:
    """The holder in a gil row (t_ns, pid, locked, holder, switches)."""
    locked, tid = int(newest[2]), int(newest[3])
    holder: dict[str, Any] = {"tid": tid if locked else 0, "locked": bool(locked)}
    t = by_thread.get((int(newest[1]), tid))
    if t is not None and locked:
        holder["name"] = t["python_name"] or t["name"]
    return holder


def _gil_line(
    fig: dict[str, Any] | None, newest: tuple | None, by_thread: dict[tuple[int, int], Any]
) -> dict[str, Any] | None:
    """A process's GIL line: holder now (the newest gil row) and the window's
    contention, held share and hand-offs (gil_metrics)."""
    if fig is None:
        return None
    return {
        "source": fig.get("source"),
        "contention": fig.get("contention"),
        "held_share": fig.get("held_share"),
        "switches_per_s": fig.get("switches_per_s"),
        "holder": None if newest is None else _holder(newest, by_thread),
    }


def _loops(meta: dict[str, Any], fr: Frames) -> list[dict[str, Any]]:
    """Event loops with stalls in the window (loop_figures on its samples,
    all of them: a busy stretch's ends are placed between samples)."""
    from .loops import loop_figures

    threads = fr.threads
    if not (threads["wait"] == "poll").any():
        return []  # no thread waited in a poll: no loop (the cheap test first)
    m = {
        "rate_hz_requested": meta.get("rate_hz_requested"),
        "machine": meta.get("machine"),
        "loop_threshold_s": meta.get("loop_threshold_s"),
        "start_ns": fr.start_ns,
        "stop_reason": "live",  # a stretch still busy at the window's end is a stall
    }
    out = []
    for lp in loop_figures(m, threads, fr.stacks):
        if lp["stalls"]:
            out.append(
                {
                    "pid": lp["pid"],
                    "tid": lp["tid"],
                    "name": lp["thread_name"],
                    "stalls": len(lp["stalls"]),
                    "longest_stall_s": lp["longest_stall_s"],
                    "busy_share": lp["busy_share"],
                    "culprit": lp["stalls"][-1].get("culprit"),
                    "threshold_s": lp["threshold_s"],
                }
            )
    return out
