"""``lock-contention``: threads of one process blocked on the same lock.

Rule (docs/findings.md): a thread in ``futex`` that is not waiting for the
GIL has wait ``lock`` and the futex's address in ``arg0``. Per (process,
address): the lock time of every thread that waited there. Reported when
at least two threads were seen waiting on it at the same sample and the
waits add up to at least 0.1 s; severity from the share of those threads'
sampled time spent waiting there. Waiters whose Python stack is a standard
library pool, queue or event wait (idle workers waiting for work share one
queue lock) are reported at ``info``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..cols import eq
from .base import (
    LONG_WAIT_S,
    Evidence,
    Finding,
    culprit,
    culprit_line,
    is_idle_stack,
    severity_of,
    spans_of,
    stack_lines,
    wait_intervals,
)

KIND = "lock-contention"
WARNING, CRITICAL = 0.2, 0.5


def find(ev: Evidence) -> list[Finding]:
    s = ev.samples
    if s.empty or "arg0" not in s.columns:
        return []
    is_lock = eq(s["wait"], "lock")
    if not is_lock.any():
        return []
    # at least two threads on one address at one sample: contention, not a
    # lone waiter (a join, an Event)
    most = _most_waiting(s, is_lock)
    both = [pa for pa, k in most.items() if k >= 2]
    if not both:
        return []
    iv = wait_intervals(s, ("lock",))
    time_of = ev.time_of
    out: list[Finding] = []
    for pid, addr in both:
        w = iv[(iv["pid"] == pid) & (iv["arg0"] == addr)]
        total = int(w["dur_ns"].sum())
        if total < LONG_WAIT_S * 1e9:
            continue
        per = w.groupby("tid")["dur_ns"].sum().sort_values(ascending=False)
        tids = [int(t) for t in per.index]
        their = float(sum(time_of.get((int(pid), t), 0) for t in tids))
        share = total / their if their else 0.0
        tid = tids[0]
        frames = ev.stack_of(int(pid), tid, spans_of(w[w["tid"] == tid]))
        idle = is_idle_stack(frames)
        holder_tid, holder_frames = _holder(ev, int(pid), w, frames)
        start, end = int(w["start_ns"].min()), int(w["end_ns"].max())
        concurrent = most[(pid, addr)]
        evidence: dict[str, float] = {
            "wait_s": total / 1e9,
            "share": share,
            "threads_waiting": len(tids),
            "max_waiting": concurrent,
            "waits": len(w),
            "longest_wait_s": float(w["dur_ns"].max()) / 1e9,
            "address": int(addr),
        }
        stacks = {"waiter": stack_lines(frames)}
        if holder_frames:
            stacks["holder"] = stack_lines(holder_frames)
        where = f" in {culprit(frames)}" if frames else ""
        others = tids[1:] + ([holder_tid] if holder_tid not in (None, *tids) else [])
        out.append(
            Finding(
                kind=KIND,
                severity="info" if idle else severity_of(share, WARNING, CRITICAL),
                title=(
                    f"{'idle threads waiting' if idle else 'lock contention'}{where}: "
                    f"{len(tids)} threads of PID {pid} waited {total / 1e9:.2f} s on one "
                    f"lock ({100 * share:.0f}% of their time)"
                ),
                start_s=ev.rel(start),
                duration_s=(end - start) / 1e9,
                pid=int(pid),
                tid=tid,
                thread_name=ev.name(int(pid), tid),
                evidence=evidence,
                stack=stack_lines(frames),
                culprit=culprit_line(frames),
                threads=others,
                stacks=stacks,
                lost_s=0.0 if idle else total / 1e9,
            )
        )
    return out


def _most_waiting(s: pd.DataFrame, is_lock: np.ndarray) -> dict[tuple[int, int], int]:
    """Per (pid, address) waited on: the most threads seen waiting there at
    one sample time, in (pid, address) order."""
    at_ = np.flatnonzero(is_lock)
    o = at_[np.lexsort(tuple(s[c].to_numpy()[at_] for c in ("tid", "t_ns", "arg0", "pid")))]
    pid, addr, t, tid = (s[c].to_numpy()[o] for c in ("pid", "arg0", "t_ns", "tid"))
    n = len(o)
    same_pa = np.zeros(n, dtype=bool)
    same_pa[1:] = (pid[1:] == pid[:-1]) & (addr[1:] == addr[:-1])
    same_at = same_pa.copy()
    same_at[1:] &= t[1:] == t[:-1]
    # threads at one (pid, address, time): 1 + the changes of tid within it
    at = np.flatnonzero(~same_at)
    other = np.ones(n, dtype=np.int64)
    other[1:] = (tid[1:] != tid[:-1]) | ~same_at[1:]
    waiting = np.add.reduceat(other, at)
    pa_start = np.flatnonzero(~same_pa[at])
    top = np.maximum.reduceat(waiting, pa_start)
    first = at[pa_start]
    return {(int(p), int(a)): int(k) for p, a, k in zip(pid[first], addr[first], top, strict=True)}


def _holder(
    ev: Evidence, pid: int, waits: pd.DataFrame, waiter: list[dict[str, Any]]
) -> tuple[int | None, list[dict[str, Any]]]:
    """A thread that held the lock, where a dump shows it: a dump taken during
    the waits of a thread of the process that was not itself waiting on the
    lock then, whose stack runs the function the waiters wait in."""
    s = ev.stacks
    if s.empty or not waiter:
        return None, []
    func, file = waiter[0].get("name"), waiter[0].get("file")
    d = s[(s["pid"] == pid) & s["frames"].map(bool)]
    if d.empty:
        return None, []
    a, b = waits["start_ns"].min(), waits["end_ns"].max()
    d = d[(d["t_ns"] >= a) & (d["end_ns"] <= b)]
    found: list[tuple[int, list[dict[str, Any]]]] = []
    for r in d.itertuples(index=False):
        mid = (r.t_ns + r.end_ns) / 2
        mine = waits[waits["tid"] == r.tid]
        waiting = bool(
            ((mine["start_ns"].to_numpy() <= mid) & (mine["end_ns"].to_numpy() > mid)).any()
        )
        if waiting:
            continue
        if any(f.get("name") == func and f.get("file") == file for f in r.frames):
            found.append((int(r.tid), list(r.frames)))
    # past the line the waiters block on: inside the lock, not acquiring it
    line = waiter[0].get("line")
    for tid, frames in found:
        if any(f.get("name") == func and f.get("line") != line for f in frames):
            return tid, frames
    return found[0] if found else (None, [])
