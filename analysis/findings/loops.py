"""``loop-blocked``: an event loop kept out of its selector by one callback.

Rule (docs/loops.md): every stall of a loop thread
(:func:`circuit.analysis.loops.loop_figures`: at least the run's
``--loop-threshold`` out of the selector) is one finding, with the state
the thread was in meanwhile and the stack py-spy took while it lasted.
``critical`` from ten times the threshold (1 s by default: every request
the loop serves waits that long), else ``warning``. A loop busy
SATURATED_SHARE (90%) of its time or more without such a stall is one
``warning`` finding for the whole loop: it is saturated.
"""

from __future__ import annotations

from typing import Any

from ..loops import loop_figures
from .base import Finding

KIND = "loop-blocked"
CRITICAL_TIMES = 10  # a stall this many times the threshold is critical


def find(ev: Any) -> list[Finding]:
    """``ev``: the run's frames (``meta``, ``threads`` classified, ``stacks``)."""
    summary = getattr(ev, "summary", None) or {}
    if "loops" in summary:  # computed once for the summary already
        return findings_of(summary["loops"])
    stacks = getattr(ev, "stacks", None)
    loops = loop_figures(
        ev.meta, ev.threads, stacks if stacks is not None and len(stacks) else None
    )
    return findings_of(loops)


def findings_of(loops: list[dict[str, Any]]) -> list[Finding]:
    """The findings of :func:`loop_figures`' loops."""
    out: list[Finding] = []
    for lp in loops:
        thr = float(lp["threshold_s"])
        for st in lp["stalls"]:
            dur = float(st["duration_s"])
            where = f" in {st['culprit']}" if st.get("culprit") else ""
            out.append(
                Finding(
                    kind=KIND,
                    severity="critical" if dur >= CRITICAL_TIMES * thr else "warning",
                    title=(
                        f"event loop blocked {dur:.3f} s{where} ({st['state']}) in PID "
                        f"{lp['pid']}: no other task or callback ran meanwhile"
                    ),
                    start_s=float(st["start_s"]),
                    duration_s=dur,
                    pid=int(lp["pid"]),
                    tid=int(lp["tid"]),
                    thread_name=str(lp.get("thread_name") or ""),
                    evidence={
                        "stall_s": dur,
                        "threshold_s": thr,
                        "busy_share": float(lp["busy_share"]),
                        **{f"{k}_s": float(v) for k, v in st["time_by_wait"].items()},
                    },
                    stack=list(st["stack"]),
                    culprit=str(st.get("culprit") or ""),
                    lost_s=dur,
                )
            )
        if lp["saturated"] and not lp["stalls"]:
            out.append(
                Finding(
                    kind=KIND,
                    severity="warning",
                    title=(
                        f"event loop saturated in PID {lp['pid']}: busy "
                        f"{100 * lp['busy_share']:.0f}% of {lp['observed_s']:.2f} s, every "
                        "callback waits for the ones before it"
                    ),
                    start_s=float(lp["start_s"]),
                    duration_s=float(lp["observed_s"]),
                    pid=int(lp["pid"]),
                    tid=int(lp["tid"]),
                    thread_name=str(lp.get("thread_name") or ""),
                    evidence={
                        "busy_share": float(lp["busy_share"]),
                        "busy_s": float(lp["busy_s"]),
                        "p90_busy_stretch_s": float(lp["busy_stretches"]["p90_s"]),
                    },
                    lost_s=float(lp["busy_s"]),
                )
            )
    return out
