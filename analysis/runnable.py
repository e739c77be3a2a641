"""Time queued for a CPU, split out of the samples' states: the ``runnable`` wait.

A sample cannot tell a thread on a CPU from one waiting in a run queue (both
are state R), and a thread woken from a sleep keeps its last row until it
first runs (the sampler reuses a row whose schedstat has not moved). The
kernel's counters can: schedstat's run delay grows by the time a thread
spent queued each time it gets a CPU. So, per thread, the increase of
``run_delay_ns`` between two samples is time it spent runnable, and it
happened before the later sample, while the thread was off a CPU:

* it is placed in the interval that ends at that sample, in the time the
  thread did not use a CPU (``dt - Δcpu``);
* what does not fit (a thread queued longer than one sampling period) goes
  to the intervals before it, latest first, each up to its own off-CPU room.

Each sample interval with a runnable share is split in two rows: the sample's
own state and wait for the first part, ``runnable`` for the rest (just
before the thread got its CPU). The rows still tile the thread's sampled
time, so every figure that sums ``dt_ns`` by wait reason (summary, GIL wait,
plots, report, export) sees run-queue time as ``runnable``, never as the
sleep, lock or GIL wait the thread had left, nor as ``running``.

The totals are the kernel's (schedstat run delay, exact to the ns); where
in time they are placed is exact to one sampling period, more when a thread
waits in a queue for several periods. Without schedstat (the psutil
backend), run delay is 0 and nothing is split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RUNNABLE = "runnable"
# Column that tells the samples (True) from the runnable rows cut out of them
# (False); present only on frames that were split. Whatever needs the sample
# times (a count of samples, the instants a GIL reading stands until) uses
# :func:`samples_only`.
SAMPLED = "sampled"


def samples_only(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` that are samples (drops the rows split out of them)."""
    if SAMPLED not in df.columns:
        return df
    return df[df[SAMPLED].to_numpy(dtype=bool)]


def runnable_ns(
    key: np.ndarray, dt: np.ndarray, cpu: np.ndarray, run_delay: np.ndarray
) -> np.ndarray:
    """Runnable ns in each sample interval (rows sorted by thread, then time).

    ``key`` identifies the thread, ``dt`` is each sample's duration and
    ``cpu``/``run_delay`` are the cumulative counters read at the sample."""
    n = len(dt)
    r = np.zeros(n, dtype=np.int64)
    if n < 2:
        return r
    same = key[1:] == key[:-1]
    dcpu = np.zeros(n, dtype=np.int64)
    drd = np.zeros(n, dtype=np.int64)
    dcpu[:-1] = np.where(same, np.maximum(cpu[1:] - cpu[:-1], 0), 0)
    drd[:-1] = np.where(same, np.maximum(run_delay[1:] - run_delay[:-1], 0), 0)
    room = np.maximum(dt.astype(np.int64) - dcpu, 0)
    np.minimum(drd, room, out=r)
    over = drd - r
    spills = np.flatnonzero(over > 0)
    if len(spills):
        _spill_back(r, room, over, key, spills)
    return r


def _spill_back(
    r: np.ndarray, room: np.ndarray, over: np.ndarray, key: np.ndarray, spills: np.ndarray
) -> None:
    """Place run delay longer than its own interval's room in the intervals
    before it, latest first (earlier spills first: their queueing came first)."""
    for i in spills.tolist():
        left = int(over[i])
        j = i - 1
        k = key[i]
        while left > 0 and j >= 0 and key[j] == k:
            free = int(room[j] - r[j])
            if free > 0:
                take = min(left, free)
                r[j] += take
                left -= take
            j -= 1
        # What is left has no room (counters read a tick apart): dropped.


def split_runnable(df: pd.DataFrame, key: np.ndarray) -> pd.DataFrame:
    """``df`` (sorted by thread and time, with ``dt_ns``) with each sample's
    runnable time as a row of its own (wait ``runnable``) after the sample's
    own shortened row, and the column ``sampled`` to tell them apart (see
    :data:`SAMPLED`). Frames without ``run_delay_ns`` come back unchanged."""
    if len(df) < 2 or "run_delay_ns" not in df.columns:
        return df
    dt = df["dt_ns"].to_numpy().astype(np.int64)
    cpu = _cpu_counter(df)
    r = runnable_ns(key, dt, cpu, df["run_delay_ns"].to_numpy().astype(np.int64))
    split = np.flatnonzero(r > 0)
    if not len(split):
        return df
    whole = split[r[split] >= dt[split]]
    part = split[r[split] < dt[split]]
    # queued for a CPU is kernel state R, whatever the sample said
    base = df.assign(wait=_with(df["wait"], RUNNABLE), state=_with(df["state"], "R"))
    wcol, scol = base.columns.get_loc("wait"), base.columns.get_loc("state")
    dcol = base.columns.get_loc("dt_ns")
    base.iloc[whole, wcol] = RUNNABLE
    base.iloc[whole, scol] = "R"
    base[SAMPLED] = True
    if not len(part):
        return base
    tail = base.iloc[part].copy()
    head_dt = dt[part] - r[part]
    tail["t_ns"] = tail["t_ns"].to_numpy() + head_dt
    tail["dt_ns"] = r[part]
    tail["wait"] = RUNNABLE
    tail["state"] = "R"
    tail[SAMPLED] = False
    base.iloc[part, dcol] = head_dt
    # a stable sort by (thread, time) puts each tail right after its head
    pos = np.r_[np.arange(len(base)), part].astype(np.float64)
    pos[len(base) :] += 0.5
    out = pd.concat([base, tail], ignore_index=False)
    order = np.argsort(pos, kind="stable")
    out = out.iloc[order]
    out.index = pd.RangeIndex(len(out))
    return out


def _with(col: pd.Series, value: str) -> pd.Series:
    """``col``, able to hold ``value`` (a categorical gains the category)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col if value in col.cat.categories else col.cat.add_categories([value])
    return col.astype(object) if col.dtype != object else col


def _cpu_counter(df: pd.DataFrame) -> np.ndarray:
    """schedstat CPU where read, else user+system (the same rule as metrics.cpu_counter)."""
    cpu = df["cpu_ns"].to_numpy().astype(np.int64)
    us = df["user_ns"].to_numpy().astype(np.int64) + df["system_ns"].to_numpy().astype(np.int64)
    return np.where(cpu > 0, cpu, us)
