"""What the ``lock-contention`` finding reads of the lock rows, reduced
thread by thread, so that a long run's batches (analysis/query.py) need
not keep them (threads that block on locks between bursts leave a lock
row at most samples: tens of millions in an hour at 1 kHz).

Per thread, its lock rows are its waits (one per uninterrupted run on one
futex address, as ``base.wait_intervals``): each (pid, address, tid) keeps
its total, count, longest, first start and last end; the py-spy dump
``Evidence.stack_of`` picks for those waits; and the dumps of the thread
taken while it waited there (for ``locks._holder``).  Per (pid, address),
the sample times of every lock row, for the most threads seen waiting at
one sample.  A thread's rows are all in one batch, so each part is final
when its batch is read; the in-memory path builds the same from all rows
at once (``of_frame``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..cols import eq

TRIPLE_COLS = ["dur_ns", "waits", "longest_ns", "start_ns", "end_ns"]


@dataclass
class LockWaits:
    triples: pd.DataFrame  # index (pid, addr, tid): TRIPLE_COLS
    times: dict[tuple[int, int], list[np.ndarray]] = field(default_factory=dict)
    frames: dict[tuple[int, int, int], list[dict[str, Any]]] = field(default_factory=dict)
    waiting: dict[tuple[int, int, int], set[Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.triples.empty

    def most_waiting(self) -> dict[tuple[int, int], int]:
        """Per (pid, address), in that order: the most threads seen waiting
        there at one sample time (a thread has one row per sample)."""
        out = {}
        for key in sorted(self.times):
            t = np.concatenate(self.times[key])
            out[key] = int(np.unique(t, return_counts=True)[1].max()) if len(t) else 0
        return out


def empty() -> LockWaits:
    idx = pd.MultiIndex.from_arrays([[], [], []], names=["pid", "addr", "tid"])
    return LockWaits(pd.DataFrame({c: pd.Series(dtype="int64") for c in TRIPLE_COLS}, index=idx))


def of_frame(samples: pd.DataFrame, stacks: pd.DataFrame | None) -> LockWaits:
    """From samples with ``dt_ns`` sorted by thread and time (Evidence.samples)."""
    if samples.empty or "arg0" not in samples.columns:
        return empty()
    m = eq(samples["wait"], "lock")
    if not m.any():
        return empty()
    return of_rows(
        *(samples[c].to_numpy()[m] for c in ("pid", "tid", "t_ns", "dt_ns", "arg0")), stacks
    )


def of_rows(
    pid: np.ndarray,
    tid: np.ndarray,
    t: np.ndarray,
    dt: np.ndarray,
    addr: np.ndarray,
    stacks: pd.DataFrame | None,
) -> LockWaits:
    """From the lock rows of whole threads, sorted by (pid, tid, t): a row
    that does not start where the row before it ended starts a new wait
    (rows in between were not lock rows)."""
    n = len(t)
    if not n:
        return empty()
    pid, tid, addr = (x.astype(np.int64) for x in (pid, tid, addr))
    t, dt = t.astype(np.int64), dt.astype(np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = (
        (pid[1:] != pid[:-1])
        | (tid[1:] != tid[:-1])
        | (addr[1:] != addr[:-1])
        | (t[1:] != t[:-1] + dt[:-1])
    )
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:] - 1, n - 1]
    # the waits by (pid, address, tid), each triple's in time order
    o = np.lexsort((tid[starts], addr[starts], pid[starts]))
    P, X, D = pid[starts][o], addr[starts][o], tid[starts][o]
    a, b = t[starts][o], (t[ends] + dt[ends])[o]
    d = b - a
    first = np.ones(len(o), dtype=bool)
    first[1:] = (P[1:] != P[:-1]) | (X[1:] != X[:-1]) | (D[1:] != D[:-1])
    at = np.flatnonzero(first)
    index = pd.MultiIndex.from_arrays([P[at], X[at], D[at]], names=["pid", "addr", "tid"])
    triples = pd.DataFrame(
        {
            "dur_ns": np.add.reduceat(d, at),
            "waits": np.diff(np.r_[at, len(o)]),
            "longest_ns": np.maximum.reduceat(d, at),
            "start_ns": np.minimum.reduceat(a, at),
            "end_ns": np.maximum.reduceat(b, at),
        },
        index=index,
    )
    out = LockWaits(triples)
    # each (pid, address)'s rows
    ro = np.lexsort((addr, pid))
    rp, rx = pid[ro], addr[ro]
    cut = np.flatnonzero(np.r_[True, (rp[1:] != rp[:-1]) | (rx[1:] != rx[:-1])])
    for i, j in zip(cut.tolist(), [*cut[1:].tolist(), n], strict=True):
        out.times[(int(rp[i]), int(rx[i]))] = [t[ro[i:j]]]
    dumps = _dumps(stacks)
    if dumps is None:
        return out
    for i, j in zip(at.tolist(), [*at[1:].tolist(), len(o)], strict=True):
        p, x, tid_ = int(P[i]), int(X[i]), int(D[i])
        mine = dumps.get((p, tid_))
        if mine is None:
            continue
        ra, rb = a[i:j], b[i:j]  # (the thread's waits there: in time order, apart)
        out.frames[(p, x, tid_)] = _stack_of(mine, ra, rb)
        mid = (mine["t_ns"].to_numpy() + mine["end_ns"].to_numpy()) / 2
        k = np.searchsorted(ra, mid, side="right") - 1
        inside = (k >= 0) & (mid < rb[np.maximum(k, 0)])
        out.waiting[(p, x, tid_)] = set(mine.index[inside])
    return out


def merge(parts: list[LockWaits]) -> LockWaits:
    """The parts of batches of different threads, as one."""
    parts = [p for p in parts if not p.empty]
    if not parts:
        return empty()
    out = LockWaits(pd.concat([p.triples for p in parts]).sort_index())
    for p in parts:
        for k, v in p.times.items():
            out.times.setdefault(k, []).extend(v)
        out.frames.update(p.frames)
        out.waiting.update(p.waiting)
    return out


def _dumps(stacks: pd.DataFrame | None) -> dict[tuple[int, int], pd.DataFrame] | None:
    """Each thread's dumps that have frames, in the table's order."""
    if stacks is None or stacks.empty:
        return None
    s = stacks[stacks["frames"].map(bool)]
    if s.empty:
        return None
    return {
        (int(p), int(d)): g for (p, d), g in s.groupby(["pid", "tid"], sort=False, observed=True)
    }


def _stack_of(mine: pd.DataFrame, a: np.ndarray, b: np.ndarray) -> list[dict[str, Any]]:
    """``Evidence.stack_of(pid, tid, spans)`` for spans [a, b) in time order
    that do not overlap (``mine``: the thread's dumps with frames): a dump
    within a span (the longest span's; among equal, the earliest span's,
    then the first dump), else the dump nearest a span's midpoint."""
    t, e = mine["t_ns"].to_numpy(), mine["end_ns"].to_numpy()
    k = np.searchsorted(a, t, side="right") - 1  # the one span a dump can lie in
    kk = np.maximum(k, 0)
    inside = (k >= 0) & (e <= b[kk])
    if inside.any():
        j = np.flatnonzero(inside)
        length = (b - a)[kk[j]]
        best = j[np.lexsort((j, kk[j], -length))[0]]
        return list(mine["frames"].iloc[int(best)])
    mid = (a + b) / 2
    ta = (t + e) / 2
    i = (
        np.clip(np.searchsorted(mid, ta), 1, len(mid) - 1)
        if len(mid) > 1
        else np.zeros(len(ta), int)
    )
    dist = np.abs(ta - mid[i])
    if len(mid) > 1:
        dist = np.minimum(dist, np.abs(ta - mid[i - 1]))
    return list(mine["frames"].iloc[int(np.argmin(dist))])
