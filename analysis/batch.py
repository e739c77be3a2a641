"""One batch of whole threads reduced, in NumPy, to what a run's summary
and findings need (analysis/query.py adds the batches up).

The same arithmetic as the in-memory path, done on arrays instead of
DataFrames: durations (``summary.with_durations``), the runnable split
(``runnable.runnable_ns``, the same function), the GIL classification
(``gil.gil_hits``), time by state and wait reason (``summary.time_by``),
counter deltas (``summary._baseline``), the GIL thread figures
(``gil.thread_base``), the split rows the findings read
(``runnable.split_rows``, then ``query._keep``).  Rows are sorted by
(pid, tid, t_ns), so a thread is a contiguous range: sums are
``reduceat`` over thread starts, and sums by (thread, value) a
``bincount``.  tests/conftest.py checks the result against the in-memory
summary on every run the tests make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .runnable import RUNNABLE, runnable_ns

COUNTERS = ["t_ns", "cpu_ns", "user_ns", "system_ns", "ctx_vol", "ctx_invol", "run_delay_ns"]
# Kept as rows (the GIL finding reads them sample by sample); lock rows
# are reduced thread by thread (``Parts.locks``), running and queued rows
# kept as CPU demand per bin (``Parts.cpu``).
ROW_WAITS = ("gil",)
RUN_WAITS = ("socket", "pipe", "disk", "child", "poll")
KEPT_WAITS = sorted((*ROW_WAITS, *RUN_WAITS))


@dataclass
class Context:
    """What every batch needs from the rest of the run."""

    meta: dict[str, Any]
    period: int
    first_t: int  # the first process sample: the baseline rule's "already there"
    attached: bool
    ranges: pd.DataFrame  # gil.gil_ranges(maps)
    epoll: set[int]  # the selector syscalls (loops._epoll_numbers)
    need_times: bool  # the run has a gil table: keep each process's sample times
    stacks: pd.DataFrame | None
    last_t: int
    first_sample: int = 0  # the run's first thread sample: the CPU bins' origin
    bucket_ns: int = 0  # > 0: also each thread's seconds by wait per time bucket
    origin_ns: int = 0  # the buckets' time zero


@dataclass
class Parts:
    """A batch's contribution to the run's figures."""

    rows: int = 0
    facts: dict[str, Any] = field(default_factory=dict)
    base: pd.DataFrame | None = None
    waited: set[int] = field(default_factory=set)
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    times: dict[int, np.ndarray] = field(default_factory=dict)
    loops: list[dict[str, Any]] = field(default_factory=list)
    lasts: pd.DataFrame | None = None
    kept: pd.DataFrame | None = None
    span: tuple[int, int, int] = (0, 0, 0)
    time_of: pd.Series | None = None
    buckets: pd.DataFrame | None = None
    cpu: dict[str, Any] = field(default_factory=dict)  # findings.cpu.bins_of's bins
    queued: pd.DataFrame | None = None  # and its queued ns per (pid, tid, bin)
    locks: Any = None  # findings.lock_waits.LockWaits of its lock rows


def _codes(tbl: Any, name: str) -> tuple[np.ndarray, list[str]]:
    """A text column as (codes, values); a missing value has the code of "nan"."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = tbl.column(name)
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    cats = [str(c) for c in arr.dictionary.to_pylist()]
    codes = pc.fill_null(arr.indices, -1).to_numpy().astype(np.int32)
    if (codes < 0).any():
        codes[codes < 0] = len(cats)
        cats.append("nan")
    return codes, cats


def _code(cats: list[str], value: str) -> int:
    """``value``'s code, adding it to ``cats`` if it is not there."""
    if value not in cats:
        cats.append(value)
    return cats.index(value)


def _num(tbl: Any, name: str) -> np.ndarray:
    return tbl.column(name).to_numpy().astype(np.int64, copy=False)


def reduce_batch(tbl: Any, ctx: Context, frame: Any) -> Parts:
    """The :class:`Parts` of one batch (a pyarrow Table of whole threads,
    sorted by pid, tid, t_ns).  ``frame(table)``: the batch's rows as the
    DataFrame the in-memory path reads (for the few rows handed to it)."""
    from .gil import gil_hits

    n = tbl.num_rows
    pid, tid, t = _num(tbl, "pid"), _num(tbl, "tid"), _num(tbl, "t_ns")
    key = (pid << 32) + tid
    new = np.ones(n, dtype=bool)
    new[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:] - 1, n - 1]
    ti = np.cumsum(new) - 1
    dt = np.empty(n, dtype=np.int64)
    dt[:-1] = t[1:] - t[:-1]
    dt[ends] = ctx.period
    user, system, cpu_ns = _num(tbl, "user_ns"), _num(tbl, "system_ns"), _num(tbl, "cpu_ns")
    us = user + system
    counter = cpu_ns if cpu_ns.all() else np.where(cpu_ns > 0, cpu_ns, us)
    rd = _num(tbl, "run_delay_ns")
    r = runnable_ns(key, dt, counter, rd) if n >= 2 else np.zeros(n, dtype=np.int64)
    own = dt - r

    wc, wcats = _codes(tbl, "wait")
    arg0 = _num(tbl, "arg0")
    if "lock" in wcats and len(ctx.ranges):
        is_lock = wc == wcats.index("lock")
        if is_lock.any():
            hit = gil_hits(pid, t, arg0, is_lock, ctx.ranges)
            if hit.any():
                wc[hit] = _code(wcats, "gil")
    sc, scats = _codes(tbl, "state")

    index = pd.MultiIndex.from_arrays([pid[starts], tid[starts]], names=["pid", "tid"])
    rsum = np.add.reduceat(r, starts)
    p = Parts(rows=n)
    p.facts = {
        "delta": _delta(tbl, starts, ends, t, ctx, index),
        "by_state": _time_by(ti, len(starts), sc, scats, own, rsum, "R", index, "state"),
        "by_wait": _time_by(ti, len(starts), wc, wcats, own, rsum, RUNNABLE, index, "wait"),
        "names": _names(tbl, ends, index),
    }
    is_gil = wc == wcats.index("gil") if "gil" in wcats else np.zeros(n, dtype=bool)
    running = wc == wcats.index("running") if "running" in wcats else np.zeros(n, dtype=bool)
    moved = np.zeros(len(starts), dtype=bool)
    for c in (cpu_ns, us):
        moved |= np.maximum.reduceat(c, starts) > np.minimum.reduceat(c, starts)
    moved |= np.add.reduceat(running.astype(np.int64), starts) > 0
    time_ns = np.add.reduceat(dt, starts)
    p.base = pd.DataFrame(
        {
            "time_ns": time_ns,
            "wait_ns": np.add.reduceat(np.where(is_gil, own, 0), starts),
            "cpu": moved,
        },
        index=index,
    )
    p.time_of = pd.Series(time_ns, index=index, name="dt_ns")
    p.waited = {int(x) for x in np.unique(pid[is_gil])}
    for q, a, b in zip(pid[starts].tolist(), t[starts].tolist(), t[ends].tolist(), strict=True):
        old = p.spans.get(q)
        p.spans[q] = (a, b) if old is None else (min(old[0], a), max(old[1], b))
    if ctx.need_times:
        p.times = {int(q): np.unique(t[pid == q]) for q in np.unique(pid)}
    p.lasts = frame(tbl.take(ends))
    sys_ = tbl.column("syscall").to_numpy().astype(np.int64)
    cols = {"pid": pid, "tid": tid, "t": t, "dt": dt, "r": r, "sys": sys_, "arg0": arg0}
    p.loops = _loops(tbl, ctx, wc, wcats, sc, scats, {**cols, "cpu": counter, "rd": rd})
    p.kept, p.span, p.cpu, p.queued, p.locks = _kept(pid, tid, t, dt, r, wc, wcats, arg0, sys_, ctx)
    if ctx.bucket_ns > 0:
        p.buckets = _buckets(pid, tid, t, dt, r, wc, wcats, ctx)
    return p


def _buckets(
    pid: np.ndarray,
    tid: np.ndarray,
    t: np.ndarray,
    dt: np.ndarray,
    r: np.ndarray,
    wc: np.ndarray,
    wcats: list[str],
    ctx: Context,
) -> pd.DataFrame:
    """Seconds by (thread, time bucket, wait reason): the timeline of a long
    run, drawn from a few hundred buckets instead of millions of intervals.
    A sample counts in the bucket its midpoint falls in; its queued part
    (runnable) likewise, as ``runnable``."""
    run_c = _code(wcats, RUNNABLE)
    b = (t + dt // 2 - ctx.origin_ns) // ctx.bucket_ns
    key = pd.MultiIndex.from_arrays([pid, tid, b], names=["pid", "tid", "bucket"])
    frames = [
        pd.DataFrame({"wait": wc, "ns": dt - r}, index=key),
        pd.DataFrame({"wait": np.full(len(r), run_c, dtype=wc.dtype), "ns": r}, index=key),
    ]
    df = pd.concat(frames).reset_index()
    df = df[df["ns"] > 0]
    out = df.groupby(["pid", "tid", "bucket", "wait"], sort=True)["ns"].sum().reset_index()
    out["wait"] = np.array(wcats, dtype=object)[out["wait"].to_numpy()]
    return out


def _delta(
    tbl: Any, starts: np.ndarray, ends: np.ndarray, t: np.ndarray, ctx: Context, index: Any
) -> pd.DataFrame:
    """Each thread's counters over the batch (summary._baseline)."""
    keep_first = t[starts] <= ctx.first_t if ctx.attached else np.zeros(len(starts), bool)
    cols = {}
    for c in COUNTERS:
        v = _num(tbl, c)
        cols[c] = v[ends] - np.where(keep_first, v[starts], 0)
    return pd.DataFrame(cols, index=index)


def _time_by(
    ti: np.ndarray,
    nthreads: int,
    codes: np.ndarray,
    cats: list[str],
    own: np.ndarray,
    rsum: np.ndarray,
    into: str,
    index: Any,
    name: str,
) -> pd.DataFrame:
    """Seconds per thread and value (summary.time_by), queued time as ``into``."""
    k = len(cats)
    flat = ti * k + codes
    secs = np.bincount(flat, weights=own.astype(np.float64), minlength=nthreads * k)
    seen = np.bincount(codes, minlength=k) > 0
    wide = pd.DataFrame(
        (secs.reshape(nthreads, k) / 1e9)[:, seen],
        index=index,
        columns=pd.Index([c for c, s in zip(cats, seen, strict=True) if s], name=name),
    )
    if into not in wide.columns:
        wide[into] = 0.0
    wide[into] = wide[into] + rsum / 1e9
    return wide


def _names(tbl: Any, ends: np.ndarray, index: Any) -> pd.Series:
    codes, cats = _codes(tbl, "name")
    vals = np.array(cats, dtype=object)[codes[ends]]
    return pd.Series(vals, index=index, name="name")


def _loops(
    tbl: Any,
    ctx: Context,
    wc: np.ndarray,
    wcats: list[str],
    sc: np.ndarray,
    scats: list[str],
    cols: dict[str, np.ndarray],
) -> list[dict[str, Any]]:
    """loops.figures of the threads seen in an epoll wait, on the batch's
    arrays (sorted by thread, as figures reads them)."""
    from .loop_rows import LoopRows, selectors_of
    from .loops import figures, loops_of

    if "poll" not in wcats or not ctx.epoll:
        return []
    c = cols
    cand = (wc == wcats.index("poll")) & np.isin(c["sys"], list(ctx.epoll))
    if not cand.any():
        return []
    sel = selectors_of(
        c["pid"][cand], c["tid"][cand], c["t"][cand], c["sys"][cand], c["arg0"][cand]
    )
    loops = loops_of(sel, ctx.stacks)
    if not loops:
        return []
    names, ncats = _codes(tbl, "name")
    stop = [scats.index(x) for x in ("t", "T") if x in scats]
    rows = LoopRows(
        pid=c["pid"],
        tid=c["tid"],
        t=c["t"],
        dt=c["dt"],
        q=c["r"],
        wc=wc,
        wcats=wcats,
        sys=c["sys"],
        arg0=c["arg0"],
        stopped=np.isin(sc, stop),
        cpu=c["cpu"],
        rd=c["rd"],
        names=names,
        ncats=ncats,
    )
    return figures(ctx.meta, loops, rows, ctx.stacks, None, ctx.last_t, int(ctx.meta["start_ns"]))


def _kept(
    pid: np.ndarray,
    tid: np.ndarray,
    t: np.ndarray,
    dt: np.ndarray,
    r: np.ndarray,
    wc: np.ndarray,
    wcats: list[str],
    arg0: np.ndarray,
    sys_: np.ndarray,
    ctx: Context,
) -> tuple[pd.DataFrame, tuple[int, int, int], dict[str, Any], pd.DataFrame, Any]:
    """The split rows (runnable.split_rows) the findings read as rows; their
    first start, last end and last midpoint; the CPU demand bins and queued
    time per (pid, tid, bin) (findings.cpu.bins_of); the lock rows reduced
    (findings.lock_waits)."""
    from .findings.cpu import BIN_NS
    from .findings.lock_waits import of_rows

    run_c = _code(wcats, RUNNABLE)
    n = len(t)
    part = (r > 0) & (r < dt)
    whole = (r > 0) & (r >= dt)
    w = wc.astype(np.int32)
    w[whole] = run_c
    # runnable.split_rows without building it: a row with a queued part
    # (``part``) is its head (t, dt - r) then a runnable tail (t + dt - r, r);
    # a row queued whole is runnable.
    head = np.where(part, dt - r, dt)
    tail_t = t + head
    span = (
        int(t.min()),
        int((t + dt).max()),
        int(
            max((t + head // 2).max(), (tail_t + r // 2)[part].max(initial=np.iinfo(np.int64).min))
        ),
    )
    # Runs of one wait on one argument: a row starts one unless the row
    # before it is of the same thread, wait and argument, ends where it
    # starts and has no runnable tail (which would come between them).
    new = np.ones(n, dtype=bool)
    new[1:] = (
        (pid[1:] != pid[:-1])
        | (tid[1:] != tid[:-1])
        | (w[1:] != w[:-1])
        | (arg0[1:] != arg0[:-1])
        | (t[1:] != tail_t[:-1])
        | part[:-1]
    )
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:] - 1, n - 1]
    end_t = np.empty(n, dtype=np.int64)
    end_t[starts] = tail_t[ends]
    row_c = [wcats.index(x) for x in ROW_WAITS if x in wcats]
    run_cs = [wcats.index(x) for x in RUN_WAITS if x in wcats]
    runs = new & np.isin(w, run_cs)
    keep = np.isin(w, row_c) | runs
    lock = w == (wcats.index("lock") if "lock" in wcats else -2)
    locks = of_rows(pid[lock], tid[lock], t[lock], head[lock], arg0[lock], ctx.stacks)
    d = np.where(runs, end_t - t, head)[keep]
    codes = np.array([KEPT_WAITS.index(c) if c in KEPT_WAITS else -1 for c in wcats])
    out = pd.DataFrame(
        {
            "pid": pid[keep].astype(np.int32),
            "tid": tid[keep].astype(np.int32),
            "t_ns": t[keep],
            "dt_ns": d,
            "wait": pd.Categorical.from_codes(codes[w[keep]], categories=KEPT_WAITS),
            "arg0": arg0[keep],
            "syscall": sys_[keep].astype(np.int16),
        }
    )
    # CPU demand per bin (a sample counts at its midpoint): the heads of
    # running rows, and the queued time (whole rows and tails)
    run_code = wcats.index("running") if "running" in wcats else -2
    running = w == run_code
    qt = np.concatenate([t[whole], tail_t[part]])
    qd = np.concatenate([dt[whole], r[part]])
    qrow = np.concatenate([np.flatnonzero(whole), np.flatnonzero(part)])
    b_run = (t[running] + head[running] // 2 - ctx.first_sample) // BIN_NS
    b_q = (qt + qd // 2 - ctx.first_sample) // BIN_NS
    nb = (
        int(
            max(
                b_run.max(initial=0),
                b_q.max(initial=0),
                (t + head // 2 - ctx.first_sample).max() // BIN_NS,
            )
        )
        + 1
    )
    cpu = {
        "running": np.bincount(b_run, weights=head[running], minlength=nb),
        "runnable": np.bincount(b_q, weights=qd, minlength=nb),
        "queued_rows": len(qt),
    }
    q = pd.DataFrame({"pid": pid[qrow], "tid": tid[qrow], "bin": b_q, "dt_ns": qd})
    queued = q.groupby(["pid", "tid", "bin"], as_index=False)["dt_ns"].sum()
    return out, span, cpu, queued, locks
