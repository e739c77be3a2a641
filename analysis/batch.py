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
# Kept as rows (the lock and GIL findings read them sample by sample);
# running and queued rows are kept as CPU demand per bin (``Parts.cpu``).
ROW_WAITS = ("lock", "gil")
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
    p.loops = _loops(tbl, ctx, frame, wc, wcats, sys_, ti, starts, ends)
    p.kept, p.span, p.cpu, p.queued = _kept(pid, tid, t, dt, r, wc, wcats, arg0, sys_, ctx)
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
    frame: Any,
    wc: np.ndarray,
    wcats: list[str],
    sys_: np.ndarray,
    ti: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
) -> list[dict[str, Any]]:
    """loops.loop_figures on the threads seen in an epoll wait (their rows only)."""
    from .loops import loop_figures

    if "poll" not in wcats or not ctx.epoll:
        return []
    cand = (wc == wcats.index("poll")) & np.isin(sys_, list(ctx.epoll))
    if not cand.any():
        return []
    import pyarrow as pa

    which = np.unique(ti[cand]).tolist()
    # the candidate threads' rows: contiguous ranges, sliced without a copy
    ranges = [(int(starts[i]), int(ends[i]) + 1) for i in which]
    df = frame(pa.concat_tables([tbl.slice(a, b - a) for a, b in ranges]))
    codes = np.concatenate([wc[a:b] for a, b in ranges])
    df["wait"] = pd.Categorical.from_codes(codes, categories=list(dict.fromkeys(wcats)))
    return loop_figures(ctx.meta, df, ctx.stacks, last_t=ctx.last_t)


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
) -> tuple[pd.DataFrame, tuple[int, int, int], dict[str, Any], pd.DataFrame]:
    """The split rows (runnable.split_rows) the findings read as rows; their
    first start, last end and last midpoint; the CPU demand bins and queued
    time per (pid, tid, bin) (findings.cpu.bins_of)."""
    from .findings.cpu import BIN_NS

    run_c = _code(wcats, RUNNABLE)
    part = (r > 0) & (r < dt)
    whole = (r > 0) & (r >= dt)
    w = wc.copy()
    w[whole] = run_c
    pos = np.arange(len(t)) + np.cumsum(part) - part
    tails = pos[part] + 1
    m = len(t) + int(part.sum())

    def spread(v: np.ndarray, tail: np.ndarray) -> np.ndarray:
        out = np.empty(m, dtype=v.dtype)
        out[pos] = v
        out[tails] = tail
        return out

    head_dt = np.where(part, dt - r, dt)
    S_pid, S_tid = spread(pid, pid[part]), spread(tid, tid[part])
    S_t = spread(t, t[part] + head_dt[part])
    S_dt = spread(head_dt, r[part])
    S_w = spread(w.astype(np.int32), np.full(len(tails), run_c, dtype=np.int32))
    S_a, S_s = spread(arg0, arg0[part]), spread(sys_, sys_[part])
    span = (int(t.min()), int((t + dt).max()), int((S_t + S_dt // 2).max()))
    new = np.ones(m, dtype=bool)
    new[1:] = (
        (S_pid[1:] != S_pid[:-1])
        | (S_tid[1:] != S_tid[:-1])
        | (S_w[1:] != S_w[:-1])
        | (S_a[1:] != S_a[:-1])
        | (S_t[1:] != S_t[:-1] + S_dt[:-1])
    )
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:] - 1, m - 1]
    end_t = np.empty(m, dtype=np.int64)
    end_t[starts] = S_t[ends] + S_dt[ends]
    row_c = [wcats.index(x) for x in ROW_WAITS if x in wcats]
    run_cs = [wcats.index(x) for x in RUN_WAITS if x in wcats]
    runs = new & np.isin(S_w, run_cs)
    keep = np.isin(S_w, row_c) | runs
    d = np.where(runs, end_t - S_t, S_dt)[keep]
    codes = np.array([KEPT_WAITS.index(c) if c in KEPT_WAITS else -1 for c in wcats])
    out = pd.DataFrame(
        {
            "pid": S_pid[keep].astype(np.int32),
            "tid": S_tid[keep].astype(np.int32),
            "t_ns": S_t[keep],
            "dt_ns": d,
            "wait": pd.Categorical.from_codes(codes[S_w[keep]], categories=KEPT_WAITS),
            "arg0": S_a[keep],
            "syscall": S_s[keep].astype(np.int16),
        }
    )
    running = S_w == wcats.index("running") if "running" in wcats else np.zeros(m, bool)
    queued = S_w == run_c
    b = (S_t + S_dt // 2 - ctx.first_sample) // BIN_NS
    nb = int(b.max()) + 1
    cpu = {
        "running": np.bincount(b[running], weights=S_dt[running], minlength=nb),
        "runnable": np.bincount(b[queued], weights=S_dt[queued], minlength=nb),
        "queued_rows": int(queued.sum()),
    }
    q = pd.DataFrame(
        {"pid": S_pid[queued], "tid": S_tid[queued], "bin": b[queued], "dt_ns": S_dt[queued]}
    )
    return out, span, cpu, q.groupby(["pid", "tid", "bin"], as_index=False)["dt_ns"].sum()
