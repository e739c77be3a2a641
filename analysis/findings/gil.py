"""``gil-contention``: Python threads of one process losing their time waiting
for the GIL, with the code of the waiters and of the holder.

Rule (docs/findings.md): per process, the GIL model's figures
(analysis/gil.py: ``wait_s`` summed over the threads that ran Python,
``contention`` = wait / their sampled time). Reported when the wait is at
least 0.1 s and the contention at least 5%; severity from the contention:
the share of the Python threads' time lost waiting.
"""

from __future__ import annotations

import numpy as np

from ..cols import eq
from .base import LONG_WAIT_S, Evidence, Finding, culprit_line, severity_of, spans_of, stack_lines

KIND = "gil-contention"
MIN_CONTENTION = 0.05
WARNING, CRITICAL = 0.2, 0.5


def find(ev: Evidence) -> list[Finding]:
    g = ev.summary.get("gil") or {}
    out: list[Finding] = []
    threads = {(t["pid"], t["tid"]): t for t in g.get("threads") or []}
    for p in g.get("processes") or []:
        c = p.get("contention")
        if c is None or p["wait_s"] < LONG_WAIT_S or c < MIN_CONTENTION:
            continue
        pid = int(p["pid"])
        s = ev.samples
        mine = s[(s["pid"] == pid) & eq(s["wait"], "gil")]
        if mine.empty:
            continue
        waits = mine.assign(start_ns=mine["t_ns"], end_ns=mine["t_ns"] + mine["dt_ns"])
        per = waits.groupby("tid")["dt_ns"].sum().sort_values(ascending=False)
        tid = int(per.index[0])
        top = waits[waits["tid"] == tid].sort_values("dt_ns", ascending=False).head(50)
        frames = ev.stack_of(pid, tid, spans_of(top))
        holder_tid, holder_frames = _holder(ev, pid, waits)
        start = int(waits["start_ns"].min())
        end = int(waits["end_ns"].max())
        evidence: dict[str, float] = {
            "wait_s": p["wait_s"],
            "thread_s": p["thread_s"],
            "contention": c,
            "threads_waiting": len(per),
            "top_wait_s": float(per.iloc[0]) / 1e9,
        }
        for k in ("held_share", "switches_per_s"):
            if p.get(k) is not None:
                evidence[k] = p[k]
        t = threads.get((pid, tid))
        if t is not None and t.get("contention") is not None:
            evidence["top_contention"] = t["contention"]
        stacks = {"waiter": stack_lines(frames)}
        if holder_frames:
            stacks["holder"] = stack_lines(holder_frames)
        others = [int(x) for x in per.index[1:]]
        if holder_tid is not None and holder_tid != tid and holder_tid not in others:
            others.append(holder_tid)
        out.append(
            Finding(
                kind=KIND,
                severity=severity_of(c, WARNING, CRITICAL),
                title=(
                    f"GIL contention in PID {pid}: {len(per)} thread(s) waited "
                    f"{p['wait_s']:.2f} s for the GIL ({100 * c:.0f}% of their time)"
                ),
                start_s=ev.rel(start),
                duration_s=(end - start) / 1e9,
                pid=pid,
                tid=tid,
                thread_name=ev.name(pid, tid),
                evidence=evidence,
                stack=stack_lines(frames),
                culprit=culprit_line(frames),
                threads=others,
                stacks=stacks,
                lost_s=float(p["wait_s"]),
            )
        )
    return out


def _holder(ev: Evidence, pid: int, waits) -> tuple[int | None, list]:
    """The thread that held the GIL while the others waited, and its code.

    Who: the interpreter's own holder (``gil`` table) most often seen during
    the waits; its code: its dump during the waits. Without the table, a dump
    taken during the waits in which py-spy saw a thread own the GIL."""
    spans = spans_of(waits.sort_values("dt_ns", ascending=False).head(200))
    gil = ev.gil
    if gil is not None and len(gil):
        g = gil[(gil["pid"] == pid) & (gil["locked"] != 0) & (gil["holder"] > 0)]
        if len(g):
            t = g["t_ns"].to_numpy()
            a = waits["start_ns"].to_numpy()
            b = waits["end_ns"].to_numpy()
            during = np.zeros(len(t), dtype=bool)
            order = np.argsort(a)
            a, b = a[order], b[order]
            i = np.searchsorted(a, t, side="right") - 1
            ok = i >= 0
            during[ok] = t[ok] < np.maximum.accumulate(b)[i[ok]]
            h = g["holder"].to_numpy()[during]
            if len(h):
                vals, counts = np.unique(h, return_counts=True)
                holder = int(vals[np.argmax(counts)])
                held = g[g["holder"] == holder]
                hspans = [(int(x), int(x) + ev.period) for x in held["t_ns"].to_numpy()[:200]]
                frames = ev.stack_of(pid, holder, hspans or spans)
                return holder, frames
    return ev.holder_stack(pid, spans)
