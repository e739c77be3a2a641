"""Run-level metrics: pure functions from run DataFrames to DataFrames.

Everything here is vectorised (numpy/pandas over whole columns): a run can
hold millions of thread samples, so there is no Python loop per sample.
Times are nanoseconds on the tracer's monotonic clock unless a column name
says otherwise (``*_s`` = seconds, ``t_s`` = seconds since the run started).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from circuit.tracer.schema import FD_KIND_COLUMNS

from .runnable import split_rows
from .summary import period_ns, time_by, with_durations

FD_KINDS = tuple(c[4:] for c in FD_KIND_COLUMNS)

INTERVAL_COLUMNS = {
    "pid": "int32",
    "tid": "int32",
    "name": "object",
    "state": "object",
    "wait": "object",
    "syscall": "int16",
    "start_ns": "int64",
    "end_ns": "int64",
    "dur_ns": "int64",
    "cpu_ns": "int64",
    "samples": "int64",
}


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


def _codes(s: pd.Series) -> np.ndarray:
    """Integer codes for equality tests (categoricals and strings alike)."""
    return pd.factorize(s, use_na_sentinel=True)[0]


def _thread_key(df: pd.DataFrame) -> np.ndarray:
    return df["tid"].to_numpy().astype(np.int64) + (df["pid"].to_numpy().astype(np.int64) << 32)


def cpu_counter(threads: pd.DataFrame) -> np.ndarray:
    """Cumulative CPU ns per sample: ``cpu_ns`` (schedstat) or user+system when absent."""
    cpu = threads["cpu_ns"].to_numpy().astype(np.int64)
    us = threads["user_ns"].to_numpy().astype(np.int64) + threads["system_ns"].to_numpy()
    return np.where(cpu > 0, cpu, us)


def start_ns(meta: dict[str, Any], *frames: pd.DataFrame) -> int:
    """The run's time zero: meta start_ns, else the first sample."""
    if meta.get("start_ns") is not None:
        return int(meta["start_ns"])
    firsts = [int(f["t_ns"].min()) for f in frames if f is not None and len(f)]
    return min(firsts) if firsts else 0


def state_intervals(threads: pd.DataFrame, period: int) -> pd.DataFrame:
    """Merge each thread's consecutive samples with the same state and wait
    reason into one interval [start_ns, end_ns).

    A sample lasts until the thread's next sample (see ``with_durations``),
    so a thread's intervals tile its observed lifetime without gaps and
    ``dur_ns`` sums to the thread's sampled time.  ``syscall`` is the one seen
    at the interval's first sample; ``cpu_ns`` is the CPU the thread used
    from the interval's start to the next interval's start.
    """
    if threads.empty:
        return _empty(INTERVAL_COLUMNS)
    cols = ["pid", "tid", "name", "state", "wait", "syscall", "t_ns", "dt_ns", "runnable_ns"]
    cols += ["cpu_ns", "user_ns", "system_ns"]
    df = split_rows(with_durations(threads, period)[cols])
    n = len(df)
    key = _thread_key(df)
    state, wait = _codes(df["state"]), _codes(df["wait"])
    new = np.ones(n, dtype=bool)
    new[1:] = (key[1:] != key[:-1]) | (state[1:] != state[:-1]) | (wait[1:] != wait[:-1])
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:] - 1, n - 1]
    t = df["t_ns"].to_numpy()
    dt = df["dt_ns"].to_numpy()
    cpu = cpu_counter(df)
    sampled = df["sampled"].to_numpy(dtype=np.int64)
    # CPU is a cumulative counter: the interval's share runs up to the next
    # sample of the same thread (the start of its next interval).
    nxt = np.minimum(ends + 1, n - 1)
    same = (ends + 1 < n) & (key[nxt] == key[ends])
    cpu_end = np.where(same, cpu[nxt], cpu[ends])
    out = pd.DataFrame(
        {
            "pid": df["pid"].to_numpy()[starts],
            "tid": df["tid"].to_numpy()[starts],
            # take the rows first, then stringify: categoricals stay cheap
            "name": df["name"].iloc[starts].astype(str).to_numpy(),
            "state": df["state"].iloc[starts].astype(str).to_numpy(),
            "wait": df["wait"].iloc[starts].astype(str).to_numpy(),
            "syscall": df["syscall"].to_numpy()[starts],
            "start_ns": t[starts],
            "end_ns": t[ends] + dt[ends],
            "cpu_ns": np.maximum(cpu_end - cpu[starts], 0),
            "samples": np.add.reduceat(sampled, starts),
        }
    )
    out.insert(8, "dur_ns", out["end_ns"] - out["start_ns"])
    return out


def time_by_wait(threads: pd.DataFrame, period: int, column: str = "wait") -> pd.DataFrame:
    """Seconds per thread and value of ``column`` (``wait`` or ``state``), long
    form: pid, tid, name, <column>, seconds.  Zero rows are dropped."""
    if threads.empty:
        return pd.DataFrame(columns=["pid", "tid", "name", column, "seconds"])
    df = with_durations(threads, period)
    wide = time_by(df, column)
    long = wide.stack().rename("seconds").reset_index()
    long = long[long["seconds"] > 0]
    names = df.groupby(["pid", "tid"], observed=True)["name"].last().astype(str).rename("name")
    long = long.join(names, on=["pid", "tid"])
    long[column] = long[column].astype(str)
    return long[["pid", "tid", "name", column, "seconds"]].reset_index(drop=True)


def time_by_syscall(intervals: pd.DataFrame) -> pd.DataFrame:
    """Seconds per thread, wait reason and syscall number (from intervals)."""
    cols = ["pid", "tid", "name", "wait", "syscall"]
    if intervals.empty:
        return pd.DataFrame(columns=[*cols, "seconds", "cpu_s"])
    g = intervals.groupby(cols, observed=True)[["dur_ns", "cpu_ns"]].sum() / 1e9
    return g.rename(columns={"dur_ns": "seconds", "cpu_ns": "cpu_s"}).reset_index()


def _bin_width(
    t: np.ndarray, period: int, bin_ns: int | None, min_ns: int = 0, max_bins: int = 200
) -> int:
    if bin_ns:
        return int(bin_ns)
    span = int(t.max() - t.min()) if len(t) else 0
    # At least two sampling periods per bin so every bin sees a counter step;
    # at most max_bins bins so a long run plots as fast as a short one.
    return max(2 * period, min_ns, span // max_bins + 1, 1)


def _binned_rates(
    df: pd.DataFrame, keys: list[str], counters: dict[str, np.ndarray], t0: int, width: int
) -> pd.DataFrame:
    """Per-key counter increments summed into time bins, divided by bin width (per second)."""
    key = np.zeros(len(df), dtype=np.int64)
    for k in keys:
        key = key * 1_000_003 + df[k].to_numpy().astype(np.int64)
    t = df["t_ns"].to_numpy()
    same = np.zeros(len(df), dtype=bool)
    same[1:] = key[1:] == key[:-1]
    data: dict[str, Any] = {k: df[k].to_numpy() for k in keys}
    data["bin"] = (t - t0) // width
    for name, c in counters.items():
        d = np.zeros(len(df), dtype=np.float64)
        d[1:] = np.diff(c)
        d[~same] = 0.0  # a thread's first sample has no predecessor
        data[name] = np.maximum(d, 0.0)
    frame = pd.DataFrame(data)
    g = frame.groupby([*keys, "bin"], sort=True)[list(counters)].sum() / (width / 1e9)
    g = g.reset_index()
    g.insert(len(keys), "t_s", (g.pop("bin") * width + width / 2) / 1e9)
    return g


def thread_rates(
    threads: pd.DataFrame, period: int, t0: int, bin_ns: int | None = None
) -> pd.DataFrame:
    """CPU (in cores: CPU seconds per second) and context switches per second,
    per thread and time bin: pid, tid, name, t_s, cpu, ctx_vol, ctx_invol."""
    cols = ["pid", "tid", "name", "t_s", "cpu", "ctx_vol", "ctx_invol"]
    if threads.empty:
        return pd.DataFrame(columns=cols)
    df = threads.sort_values(["pid", "tid", "t_ns"], kind="stable")
    width = _bin_width(df["t_ns"].to_numpy(), period, bin_ns)
    counters = {
        "cpu": cpu_counter(df) / 1e9,
        "ctx_vol": df["ctx_vol"].to_numpy().astype(np.float64),
        "ctx_invol": df["ctx_invol"].to_numpy().astype(np.float64),
    }
    out = _binned_rates(df, ["pid", "tid"], counters, t0, width)
    names = df.groupby(["pid", "tid"], observed=True)["name"].last().astype(str).rename("name")
    out = out.join(names, on=["pid", "tid"])
    return out[cols]


def process_cpu(
    processes: pd.DataFrame, period: int, t0: int, bin_ns: int | None = None
) -> pd.DataFrame:
    """Process CPU in cores per time bin: pid, t_s, cpu (user+system, all threads,
    including ones that exited between samples)."""
    if processes.empty:
        return pd.DataFrame(columns=["pid", "t_s", "cpu"])
    df = processes.sort_values(["pid", "t_ns"], kind="stable")
    # /proc/PID/stat counts CPU in clock ticks (10 ms): narrower bins alias.
    width = _bin_width(df["t_ns"].to_numpy(), period, bin_ns, min_ns=50_000_000)
    c = (df["user_ns"].to_numpy() + df["system_ns"].to_numpy()) / 1e9
    return _binned_rates(df, ["pid"], {"cpu": c}, t0, width)


def fd_counts(processes: pd.DataFrame, t0: int, by_pid: bool = False) -> pd.DataFrame:
    """Open fds by kind over time, summed over processes (or per pid):
    t_s, [pid], one column per kind (file, socket, pipe, epoll, ...), total."""
    kinds = [c for c in FD_KIND_COLUMNS if c in processes.columns]
    keys = ["t_ns", "pid"] if by_pid else ["t_ns"]
    if processes.empty or not kinds:
        return pd.DataFrame(columns=["t_s", *keys[1:], *FD_KINDS, "total"])
    g = processes.groupby(keys, sort=True)[kinds].sum().reset_index()
    g.columns = [c[4:] if c.startswith("fds_") else c for c in g.columns]
    g.insert(0, "t_s", (g.pop("t_ns") - t0) / 1e9)
    g["total"] = g[[c[4:] for c in kinds]].sum(axis=1)
    return g


def fd_peaks(processes: pd.DataFrame) -> pd.DataFrame:
    """Peak open fds per process and kind (pid index, one column per kind + total)."""
    kinds = [c for c in FD_KIND_COLUMNS if c in processes.columns]
    if processes.empty:
        return pd.DataFrame(columns=[*FD_KINDS, "total"])
    cols = kinds + (["fds"] if "fds" in processes.columns else [])
    g = processes.groupby("pid")[cols].max()
    g.columns = [c[4:] if c.startswith("fds_") else "total" for c in g.columns]
    return g


def task_spans(marks: pd.DataFrame) -> pd.DataFrame:
    """Pair ``task-start``/``task-end`` marks (same pid and ``task`` field) into
    spans: task, pid, tid, start_ns, end_ns (NaN when the task never ended), dur_s.

    The n-th start of a task id pairs with its n-th end, so a task id reused
    sequentially still pairs correctly.
    """
    cols = ["task", "pid", "tid", "start_ns", "end_ns", "dur_s"]
    if marks.empty or "field_task" not in marks.columns or "name" not in marks.columns:
        return pd.DataFrame(columns=cols)
    m = marks[marks["name"].isin(["task-start", "task-end"])].copy()
    if m.empty:
        return pd.DataFrame(columns=cols)
    m["task"] = m["field_task"].astype(str)
    m = m.sort_values("t_ns", kind="stable")
    m["nth"] = m.groupby(["pid", "task", "name"]).cumcount()
    starts = m[m["name"] == "task-start"][["pid", "task", "nth", "tid", "t_ns"]]
    ends = m[m["name"] == "task-end"][["pid", "task", "nth", "t_ns"]]
    spans = starts.merge(ends, on=["pid", "task", "nth"], how="left", suffixes=("_s", "_e"))
    out = pd.DataFrame(
        {
            "task": spans["task"],
            "pid": spans["pid"],
            "tid": spans["tid"],
            "start_ns": spans["t_ns_s"],
            "end_ns": spans["t_ns_e"],
        }
    )
    out["dur_s"] = (out["end_ns"] - out["start_ns"]) / 1e9
    return out.sort_values("start_ns", kind="stable").reset_index(drop=True)


def run_period(meta: dict[str, Any]) -> int:
    return period_ns(meta)
