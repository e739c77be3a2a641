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

Each sample interval gets a ``runnable_ns`` column (``with_durations``): the
part of its ``dt_ns`` the thread spent queued. Its own state and wait
reason stand for the rest, ``dt_ns - runnable_ns`` (:func:`own_ns`). Every
figure that sums time by wait reason counts ``runnable_ns`` as ``runnable``
(``summary.time_by``; the GIL wait, the bench rows), never as the sleep,
lock or GIL wait the thread had left, nor as ``running``; the timeline cuts
it into intervals of its own (:func:`split_rows`, on the few columns it draws).

The totals are the kernel's (schedstat run delay, exact to the ns); where
in time they are placed is exact to one sampling period, more when a thread
waits in a queue for several periods. Without schedstat (the psutil
backend), run delay is 0 and nothing is split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RUNNABLE = "runnable"
RUNNABLE_NS = "runnable_ns"


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
    other = key[1:] != key[:-1]  # the next row is another thread's
    drd = np.zeros(n, dtype=np.int64)
    np.subtract(run_delay[1:], run_delay[:-1], out=drd[:-1])
    drd[:-1][other] = 0
    np.maximum(drd, 0, out=drd)
    if not drd.any():
        return r
    room = np.zeros(n, dtype=np.int64)
    np.subtract(cpu[1:], cpu[:-1], out=room[:-1])
    room[:-1][other] = 0
    np.maximum(room, 0, out=room)
    np.subtract(dt, room, out=room)  # dt - CPU used: the time off a CPU
    np.maximum(room, 0, out=room)
    np.minimum(drd, room, out=r)
    over = drd - r
    spills = np.flatnonzero(over)
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


def add_runnable(df: pd.DataFrame, key: np.ndarray) -> pd.DataFrame:
    """``df`` (sorted by thread and time, with ``dt_ns``) with ``runnable_ns``;
    0 everywhere for frames without ``run_delay_ns`` (nothing to split)."""
    n = len(df)
    if n < 2 or "run_delay_ns" not in df.columns:
        return df.assign(**{RUNNABLE_NS: np.zeros(n, dtype=np.int64)})
    dt = np.asarray(df["dt_ns"].to_numpy(), dtype=np.int64)
    rd = np.asarray(df["run_delay_ns"].to_numpy(), dtype=np.int64)
    r = runnable_ns(key, dt, _cpu_counter(df), rd)
    return df.assign(**{RUNNABLE_NS: r})


def own_ns(df: pd.DataFrame) -> np.ndarray:
    """Each row's time in its own state and wait reason: ``dt_ns`` less the
    time it was queued for a CPU."""
    dt = df["dt_ns"].to_numpy().astype(np.int64)
    if RUNNABLE_NS not in df.columns:
        return dt
    return dt - df[RUNNABLE_NS].to_numpy().astype(np.int64)


def split_rows(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with each row's runnable time as a row of its own, right after
    the row (its ``t_ns`` moved to where the queueing ends, wait
    ``runnable``, state ``R``) and the row's ``dt_ns`` shortened to match, so
    the rows still tile each thread's time. A row all runnable is relabelled.
    For drawing: call it on the few columns drawn, not on a whole run. The
    rows added have ``sampled`` False; the samples True."""
    if RUNNABLE_NS not in df.columns:
        return df
    dt = df["dt_ns"].to_numpy().astype(np.int64)
    r = df[RUNNABLE_NS].to_numpy().astype(np.int64)
    whole = np.flatnonzero((r > 0) & (r >= dt))
    part = np.flatnonzero((r > 0) & (r < dt))
    base = df.assign(wait=_with(df["wait"], RUNNABLE), state=_with(df["state"], "R"))
    base["sampled"] = True
    if not len(whole) and not len(part):
        return base
    wcol, scol = base.columns.get_loc("wait"), base.columns.get_loc("state")
    base.iloc[whole, wcol] = RUNNABLE
    base.iloc[whole, scol] = "R"
    if not len(part):
        return base
    tail = base.iloc[part].copy()
    head_dt = dt[part] - r[part]
    tail["t_ns"] = tail["t_ns"].to_numpy() + head_dt
    tail["dt_ns"] = r[part]
    tail["wait"] = RUNNABLE
    tail["state"] = "R"
    tail["sampled"] = False
    base.iloc[part, base.columns.get_loc("dt_ns")] = head_dt
    # each tail goes right after its row: a stable sort on the row's position
    pos = np.r_[np.arange(len(base), dtype=np.float64), part + 0.5]
    out = pd.concat([base, tail], ignore_index=True)
    return out.iloc[np.argsort(pos, kind="stable")].reset_index(drop=True)


def _with(col: pd.Series, value: str) -> pd.Series:
    """``col``, able to hold ``value`` (a categorical gains the category)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col if value in col.cat.categories else col.cat.add_categories([value])
    return col.astype(object) if col.dtype != object else col


def _cpu_counter(df: pd.DataFrame) -> np.ndarray:
    """schedstat CPU where read, else user+system (the same rule as metrics.cpu_counter)."""
    cpu = np.asarray(df["cpu_ns"].to_numpy(), dtype=np.int64)
    if cpu.all():
        return cpu
    us = np.asarray(df["user_ns"].to_numpy(), dtype=np.int64) + df["system_ns"].to_numpy()
    return np.where(cpu > 0, cpu, us)
