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

from .base import (
    LONG_WAIT_S,
    Evidence,
    Finding,
    culprit,
    culprit_line,
    is_idle_stack,
    severity_of,
    stack_lines,
)

KIND = "lock-contention"
WARNING, CRITICAL = 0.2, 0.5


def find(ev: Evidence) -> list[Finding]:
    lw = ev.lock_waits
    if lw.empty:
        return []
    # at least two threads on one address at one sample: contention, not a
    # lone waiter (a join, an Event)
    most = lw.most_waiting()
    both = [pa for pa, k in most.items() if k >= 2]
    if not both:
        return []
    time_of = ev.time_of
    out: list[Finding] = []
    for pid, addr in both:
        w = lw.triples.loc[(pid, addr)]  # by tid
        total = int(w["dur_ns"].sum())
        if total < LONG_WAIT_S * 1e9:
            continue
        per = w["dur_ns"].sort_values(ascending=False)
        tids = [int(t) for t in per.index]
        their = float(sum(time_of.get((int(pid), t), 0) for t in tids))
        share = total / their if their else 0.0
        tid = tids[0]
        frames = lw.frames.get((pid, addr, tid), [])
        idle = is_idle_stack(frames)
        start, end = int(w["start_ns"].min()), int(w["end_ns"].max())
        holder_tid, holder_frames = _holder(ev, pid, addr, start, end, frames)
        concurrent = most[(pid, addr)]
        evidence: dict[str, float] = {
            "wait_s": total / 1e9,
            "share": share,
            "threads_waiting": len(tids),
            "max_waiting": concurrent,
            "waits": int(w["waits"].sum()),
            "longest_wait_s": float(w["longest_ns"].max()) / 1e9,
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


def _holder(
    ev: Evidence, pid: int, addr: int, a: int, b: int, waiter: list[dict[str, Any]]
) -> tuple[int | None, list[dict[str, Any]]]:
    """A thread that held the lock, where a dump shows it: a dump taken during
    the waits (from ``a`` to ``b``) of a thread of the process that was not
    itself waiting on the lock then, whose stack runs the function the
    waiters wait in."""
    s = ev.stacks
    if s.empty or not waiter:
        return None, []
    func, file = waiter[0].get("name"), waiter[0].get("file")
    d = s[(s["pid"] == pid) & s["frames"].map(bool)]
    if d.empty:
        return None, []
    d = d[(d["t_ns"] >= a) & (d["end_ns"] <= b)]
    waiting = ev.lock_waits.waiting
    found: list[tuple[int, list[dict[str, Any]]]] = []
    for r in d.itertuples(index=True):
        if r.Index in waiting.get((pid, addr, int(r.tid)), ()):
            continue
        if any(f.get("name") == func and f.get("file") == file for f in r.frames):
            found.append((int(r.tid), list(r.frames)))
    # past the line the waiters block on: inside the lock, not acquiring it
    line = waiter[0].get("line")
    for tid, frames in found:
        if any(f.get("name") == func and f.get("line") != line for f in frames):
            return tid, frames
    return found[0] if found else (None, [])
