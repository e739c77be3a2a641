"""The arithmetic of analysis/loops.py on arrays: one loop thread's
samples as NumPy columns, so that a long run's loop threads (millions of
samples each) are measured without a DataFrame per thread.  The in-memory
path (``loops.loop_figures``) and the batched one (``batch._loops``) both
build :class:`LoopRows` and call the same functions; docs/loops.md has the
rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .cols import codes as _codes
from .cols import isin


@dataclass
class LoopRows:
    """Samples of loop threads, sorted by (pid, tid, t_ns), as arrays:
    ``dt`` the sample's duration and ``q`` its queued part (runnable ns);
    ``wc`` the wait's code in ``wcats``, ``names`` the thread name's code
    in ``ncats``; ``cpu`` the CPU counter (schedstat, else user+system),
    ``rd`` the run delay (-1: not read)."""

    pid: np.ndarray
    tid: np.ndarray
    t: np.ndarray
    dt: np.ndarray
    q: np.ndarray
    wc: np.ndarray
    wcats: list[str]
    sys: np.ndarray
    arg0: np.ndarray
    stopped: np.ndarray
    cpu: np.ndarray
    rd: np.ndarray
    names: np.ndarray
    ncats: list[str]

    @classmethod
    def of(cls, df: pd.DataFrame) -> LoopRows:
        """From samples with ``dt_ns`` and ``runnable_ns`` (summary.with_durations)."""
        from .metrics import cpu_counter

        def i64(c: str, default: int = 0) -> np.ndarray:
            if c not in df.columns:
                return np.full(len(df), default, dtype=np.int64)
            return df[c].to_numpy().astype(np.int64, copy=False)

        wc, wcats = _codes(df["wait"])
        names, ncats = (
            _codes(df["name"]) if "name" in df.columns else _codes(pd.Series([""] * len(df)))
        )
        return cls(
            pid=i64("pid"),
            tid=i64("tid"),
            t=i64("t_ns"),
            dt=i64("dt_ns"),
            q=i64("runnable_ns"),
            wc=wc,
            wcats=wcats,
            sys=i64("syscall", -1),
            arg0=i64("arg0"),
            stopped=isin(df["state"], ("t", "T"))
            if "state" in df.columns
            else np.zeros(len(df), bool),
            cpu=cpu_counter(df)
            if {"cpu_ns", "user_ns", "system_ns"} <= set(df.columns)
            else i64("cpu_ns"),
            rd=i64("run_delay_ns", -1),
            names=names,
            ncats=ncats,
        )

    def slice(self, a: int, b: int) -> LoopRows:
        """Rows a..b-1 (views, no copy)."""
        kw = {k: v[a:b] if isinstance(v, np.ndarray) else v for k, v in self.__dict__.items()}
        return LoopRows(**kw)

    def code(self, wait: str) -> int:
        """``wait``'s code (-2: absent, matching no row)."""
        return self.wcats.index(wait) if wait in self.wcats else -2

    def idle(self, syscall: int, epfd: int) -> np.ndarray:
        """The samples in the selector (that syscall on that fd)."""
        return (self.wc == self.code("poll")) & (self.sys == syscall) & (self.arg0 == epfd)


def stretches(
    r: LoopRows, syscall: int, epfd: int
) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """One loop thread's busy stretches (``start_ns``, ``end_ns``,
    ``dur_ns``, ``ended``, ``first``, ``last``) and its observed span (first
    idle sample to the end of the last one): loops.busy_stretches."""
    empty = {k: np.zeros(0, dtype=bool if k == "ended" else np.int64) for k in _STRETCH_COLS}
    n = len(r.t)
    if not n:
        return empty, (0, 0)
    idle = r.idle(syscall, epfd)
    # 1 idle, 0 busy; a stopped sample carries the status before it (none
    # before it: neither)
    base = np.where(idle, 1, 0).astype(np.int8)
    pos = np.where(r.stopped, -1, np.arange(n))
    src = np.maximum.accumulate(pos)
    status = np.where(src >= 0, base[np.maximum(src, 0)], -1)
    idle_at = np.flatnonzero(status == 1)
    if not len(idle_at):
        return empty, (0, 0)
    busy = status == 0
    lo, hi = int(idle_at[0]), int(idle_at[-1])
    busy[:lo] = False  # before the loop first waited: not the loop yet
    edge = np.diff(np.r_[0, busy.astype(np.int8), 0])
    first = np.flatnonzero(edge == 1)
    after = np.flatnonzero(edge == -1)  # the sample after each stretch (n: none)
    last = after - 1
    ended = after < n
    t, dt = r.t, r.dt
    # It left the selector between the idle sample before it and its first
    # busy one, and came back between its last busy sample and the next
    # idle one: midway is the estimate, half a gap either way.
    start = (t[first - 1] + t[first]) // 2
    nxt = np.where(ended, t[np.minimum(after, n - 1)], 0)
    end = np.where(ended, (t[last] + nxt) // 2, t[last] + dt[last])
    out = {
        "start_ns": start,
        "end_ns": end,
        "dur_ns": end - start,
        "ended": ended,
        "first": first,
        "last": last,
    }
    return out, (int(t[lo]), int(t[hi] + dt[hi]))


_STRETCH_COLS = ("start_ns", "end_ns", "dur_ns", "ended", "first", "last")


def busy_parts(r: LoopRows, a: int, b: int, syscall: int, epfd: int) -> tuple[int, int, int]:
    """The loop thread's time out of its selector over [a, b): its CPU time
    (the counter: exact, however short its bursts), its run-queue time (run
    delay, counted apart: queued after a wake-up the loop is late, not
    busy), and the time its samples show it blocked in anything but its
    selector (a sleep, a socket read: waits seen by the samples)."""
    i, j = (int(x) for x in np.searchsorted(r.t, [a, b], side="left"))
    if j - i < 2:
        return 0, 0, 0
    s = r.slice(i, j)
    cpu_ns = max(int(s.cpu[-1] - s.cpu[0]), 0)
    queued_ns = max(int(s.rd[-1] - s.rd[0]), 0) if s.rd[0] >= 0 else 0
    blocked = (
        ~s.idle(syscall, epfd)
        & ~s.stopped
        & (s.wc != s.code("running"))
        & (s.wc != s.code("runnable"))
    )
    own = s.dt - s.q
    return cpu_ns, queued_ns, int(own[blocked].sum())


def time_by_wait(r: LoopRows) -> dict[str, float]:
    """Seconds by wait reason of these samples, their queued parts as ``runnable``."""
    from .runnable import RUNNABLE

    own = np.bincount(r.wc, weights=(r.dt - r.q).astype(np.float64), minlength=len(r.wcats))
    seen = np.bincount(r.wc, minlength=len(r.wcats)) > 0
    out = {
        r.wcats[k]: float(own[k]) / 1e9
        for k in sorted(np.flatnonzero(seen), key=lambda k: r.wcats[k])
    }
    q = float(r.q.sum()) / 1e9
    if q > 0:
        out[RUNNABLE] = out.get(RUNNABLE, 0.0) + q
    return {k: round(v, 6) for k, v in out.items() if v > 0}


def selectors_of(
    pid: np.ndarray, tid: np.ndarray, t: np.ndarray, sys_: np.ndarray, arg0: np.ndarray
) -> list[tuple[int, int, int, int, int]]:
    """Per thread of these samples in an epoll wait: (pid, tid, its first
    ``t_ns`` there, the syscall and fd it waited on most; ties: the lowest
    syscall, then fd), by thread."""
    if not len(t):
        return []
    key = (pid.astype(np.int64) << 32) + tid.astype(np.int64)
    if np.any(key[1:] < key[:-1]):
        order = np.argsort(key, kind="stable")
        key, t, sys_, arg0 = key[order], t[order], sys_[order], arg0[order]
    new = np.ones(len(key), dtype=bool)
    new[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(key)]
    out = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        s, f = sys_[a:b], arg0[a:b]
        if (s == s[0]).all() and (f == f[0]).all():
            best = (int(s[0]), int(f[0]))
        else:
            pairs, counts = np.unique(np.stack([s, f], axis=1), axis=0, return_counts=True)
            best = (int(pairs[np.argmax(counts), 0]), int(pairs[np.argmax(counts), 1]))
        k = int(key[a])
        out.append((k >> 32, k & 0xFFFFFFFF, int(t[a:b].min()), *best))
    return out


def as_frame(st: dict[str, Any], span: tuple[int, int]) -> pd.DataFrame:
    df = pd.DataFrame({c: st[c] for c in _STRETCH_COLS})
    df.attrs["span"] = span
    return df
