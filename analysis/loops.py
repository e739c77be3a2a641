"""Event loops seen from outside: which threads run one, when they stalled,
what blocked them, and how busy they were (docs/loops.md).

Pure functions of a run's frames; ``circuit summary --json``'s ``loops``,
the report's event-loop section, the Perfetto slices and the
``loop-blocked`` finding all come from :func:`loop_figures`.

**A loop thread** is a thread that waited in ``epoll_wait`` (wait ``poll``,
an ``epoll_*`` syscall): its *selector* is the epoll fd it waited on most.
When py-spy dumped the thread after its first epoll wait, one of its
stacks must also show an event loop (asyncio's ``base_events.py`` /
``runners.py``, or uvloop); without such dumps, the kernel evidence stands
alone (``identified_by: "epoll"``).

**Idle, busy, stalls.** A sample of a loop thread in its selector (that
syscall on that fd) is *idle*; any other sample is *busy*; a sample taken
while a blocking py-spy dump had the thread stopped (state ``t``) keeps
the status before it.  A busy stretch began between its first busy sample
and the idle one before it, and ended between its last busy sample and the
next idle one: the midpoints are taken, so each end is known to half the
gap between two samples.  A *stall* is a busy stretch of at least the loop
threshold (``--loop-threshold``, default 0.1 s: asyncio's
``slow_callback_duration``).
A loop that goes back to its selector only when events are ready
(``epoll_wait`` returning at once) between two samples reads as busy.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from .cols import eq
from .loop_rows import LoopRows, as_frame, busy_parts, selectors_of, stretches, time_by_wait

# asyncio's own slow_callback_duration
DEFAULT_THRESHOLD_S = 0.1
# Busy this share of the loop's time or more: saturated, even with no long stall.
SATURATED_SHARE = 0.9
# Busy stretch length buckets (upper bounds, seconds) for the distribution.
BUCKETS_S = (0.01, 0.1, 1.0)
# No remote reader of asyncio tasks exists before CPython 3.14, and circuit
# does not read 3.14's yet.
TASKS_NOTE = (
    "not available: reading asyncio tasks from outside needs CPython 3.14's remote "
    "debugging, which circuit does not read yet (docs/loops.md)"
)

# Frames that say "this thread runs an event loop".
_LOOP_FUNCS = {"_run_once", "run_forever", "run_until_complete"}


def threshold_s(meta: dict[str, Any], override: float | None = None) -> float:
    """The loop threshold of a run: ``override``, else the one it was traced
    with (meta ``loop_threshold_s``), else the default."""
    if override is not None:
        return float(override)
    v = meta.get("loop_threshold_s")
    return float(v) if isinstance(v, (int, float)) and v > 0 else DEFAULT_THRESHOLD_S


def is_loop_frame(f: dict[str, Any]) -> bool:
    path = str(f.get("file") or "").replace("\\", "/")
    name = str(f.get("name") or "")
    if "uvloop" in path:
        return True
    if path.endswith("asyncio/base_events.py") and name in _LOOP_FUNCS:
        return True
    return path.endswith("asyncio/runners.py")


def is_selector_stack(frames: list[dict[str, Any]]) -> bool:
    """The innermost Python frame is the loop waiting for events."""
    if not frames:
        return False
    f = frames[0]
    path = str(f.get("file") or "")
    return path.endswith("selectors.py") or (
        path.endswith("base_events.py") and f.get("name") == "_run_once"
    )


def culprit(frames: list[dict[str, Any]]) -> str:
    """The innermost frame of the program's own code (not under
    ``lib/pythonX.Y/``), else the innermost frame, as ``func (file:line)``."""
    for f in frames:
        path = str(f.get("file") or "")
        if "/lib/python" not in path and not path.startswith("<frozen"):
            return _frame_str(f)
    return _frame_str(frames[0]) if frames else ""


def _frame_str(f: dict[str, Any]) -> str:
    return f"{f.get('name')} ({PurePath(str(f.get('file') or '?')).name}:{f.get('line')})"


def _epoll_numbers(machine: str | None) -> set[int]:
    from circuit.tracer.waits import syscall_table

    return {nr for name, nr in syscall_table(machine).items() if name.startswith("epoll_")}


def find_loops(
    threads: pd.DataFrame, stacks: pd.DataFrame | None, machine: str | None = None
) -> list[dict[str, Any]]:
    """The loop threads: ``pid``, ``tid``, their selector (``syscall``,
    ``epfd``) and ``identified_by`` (``stack``: a py-spy stack shows the
    loop; ``epoll``: no dump of the process, kernel evidence only)."""
    if threads.empty or not {"wait", "syscall", "arg0"} <= set(threads.columns):
        return []
    epoll = _epoll_numbers(machine)
    w = eq(threads["wait"], "poll") & threads["syscall"].isin(list(epoll)).to_numpy()
    if not w.any():
        return []

    def col(c: str) -> np.ndarray:
        return threads[c].to_numpy()[w].astype(np.int64)

    return loops_of(
        selectors_of(col("pid"), col("tid"), col("t_ns"), col("syscall"), col("arg0")), stacks
    )


def loops_of(
    selectors: list[tuple[int, int, int, int, int]], stacks: pd.DataFrame | None
) -> list[dict[str, Any]]:
    """find_loops from loop_rows.selectors_of's (pid, tid, first epoll
    wait, syscall, fd): the threads whose dumps do not deny a loop."""
    stacks = stacks if stacks is not None else pd.DataFrame()
    dumped = set(stacks["pid"].astype(int)) if len(stacks) else set()
    out = []
    for pid, tid, first_t, syscall, epfd in selectors:
        by = "epoll"
        if pid in dumped:
            mine = stacks[(stacks["pid"] == pid) & (stacks["tid"] == tid)]
            if any(any(is_loop_frame(f) for f in fr or []) for fr in mine["frames"]):
                by = "stack"
            elif (mine["end_ns"] >= first_t).any():
                continue  # dumped while it used epoll, and no loop on it: not a loop
            # else: every dump of it came before its first epoll wait
            # (imports, say): the kernel evidence stands alone
        out.append({"pid": pid, "tid": tid, "syscall": syscall, "epfd": epfd, "identified_by": by})
    return out


def busy_stretches(rows: pd.DataFrame, syscall: int, epfd: int) -> pd.DataFrame:
    """One loop thread's busy stretches (``rows``: its samples with
    ``dt_ns``, in time order): ``start_ns``, ``end_ns``, ``dur_ns``,
    ``ended`` (False: no idle sample came after it), ``first``/``last``
    (row positions), and the loop's observed span as attrs ``span``
    (first idle sample to the end of the last one)."""
    r = LoopRows.of(rows if "runnable_ns" in rows.columns else rows.assign(runnable_ns=0))
    return as_frame(*stretches(r, syscall, epfd))


def _state(by_wait: dict[str, float], threshold: float) -> str:
    """What a stalled loop thread did most. Time queued for a CPU counts as
    ``running`` (the callback wanted the CPU; other work on the machine had
    it), unless the thread ran for less than the threshold: its own work
    would not have stalled the loop on an idle machine, the queue (or a
    blocking dump's pause) did: ``runnable``."""
    if not by_wait:
        return "other"
    d = dict(by_wait)
    queued = d.pop("runnable", 0.0)
    ran = d.get("running", 0.0)
    d["running"] = ran + queued
    top = max(d, key=lambda k: d[k])
    if top == "running" and ran < threshold:
        return "runnable"
    return top


def _stall_stack(
    stacks: pd.DataFrame, pid: int, tid: int, a: int, b: int, period: int
) -> tuple[list[dict[str, Any]], int | None, str]:
    """Frames of ``tid`` from a dump that started while the stall was in
    progress (its start is known to one period), not showing the selector."""
    if stacks is None or stacks.empty:
        return [], None, ""
    s = stacks[
        (stacks["pid"] == pid)
        & (stacks["tid"] == tid)
        & (stacks["t_ns"] >= a - period)
        & (stacks["t_ns"] < b)
    ].sort_values("t_ns")
    for t_ns, fr, trig in zip(s["t_ns"], s["frames"], s["trigger"], strict=True):
        if fr and not is_selector_stack(fr):
            return list(fr), int(t_ns), str(trig)
    return [], None, ""


def loop_figures(
    meta: dict[str, Any],
    threads: pd.DataFrame,
    stacks: pd.DataFrame | None = None,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Per loop thread: ``pid``, ``tid``, ``busy_share`` (CPU counter plus
    sampled blocked time outside the selector, over the observed span),
    ``longest_stall_s``, ``stalls`` (``start_s``, ``duration_s``, ``state``,
    ``stack``...), the busy stretches' distribution (from the samples), and
    whether it is saturated.  ``threads``: the run's samples (classified or
    not)."""
    from . import metrics as M
    from .summary import with_durations

    if threads.empty:
        return []
    loops = find_loops(threads, stacks, meta.get("machine"))
    if not loops:
        return []
    keys = {(lp["pid"], lp["tid"]) for lp in loops}
    key = (threads["pid"].to_numpy().astype(np.int64) << 32) + threads["tid"].to_numpy()
    mask = np.isin(key, [(p << 32) + t for p, t in keys])
    rows = LoopRows.of(with_durations(threads[mask], M.run_period(meta)))
    t0 = M.start_ns(meta, threads)
    return figures(meta, loops, rows, stacks, threshold, int(threads["t_ns"].max()), t0)


def figures(
    meta: dict[str, Any],
    loops: list[dict[str, Any]],
    rows: LoopRows,
    stacks: pd.DataFrame | None,
    threshold: float | None,
    last_t: int,
    t0: int,
) -> list[dict[str, Any]]:
    """loop_figures of ``loops`` (find_loops) from their threads' ``rows``;
    ``last_t``: the run's last sample time; ``t0``: its time zero."""
    from . import metrics as M

    per = M.run_period(meta)
    thr = threshold_s(meta, threshold)
    ongoing_ok = meta.get("stop_reason") not in (None, "target exited")
    key = (rows.pid << 32) + rows.tid
    out = []
    for lp in loops:
        pid, tid = lp["pid"], lp["tid"]
        i = int(np.searchsorted(key, (pid << 32) + tid, side="left"))
        j = int(np.searchsorted(key, (pid << 32) + tid, side="right"))
        r = rows.slice(i, j)
        st, (a, b) = stretches(r, lp["syscall"], lp["epfd"])
        # A busy stretch that never went back to the selector is a stall
        # only if the run stopped while it went on (attach, Ctrl-C): when
        # the program exits, it is the loop closing, not a stall.
        live = ongoing_ok and len(r.t) and int(r.t[-1]) >= last_t - 2 * per
        keep = st["ended"] | bool(live)
        st = {k: v[keep] for k, v in st.items()}
        span_ns = max(b - a, 0)
        if len(st["ended"]) and not bool(st["ended"][-1]):
            span_ns = max(span_ns, int(st["end_ns"][-1]) - a)
        cpu_ns, queued_ns, blocked_ns = busy_parts(r, a, a + span_ns, lp["syscall"], lp["epfd"])
        busy_ns = cpu_ns + blocked_ns
        stalls = []
        for k in np.flatnonzero(st["dur_ns"] >= round(thr * 1e9)).tolist():
            start, end = int(st["start_ns"][k]), int(st["end_ns"][k])
            by_wait = time_by_wait(r.slice(int(st["first"][k]), int(st["last"][k]) + 1))
            frames, stack_t, trig = _stall_stack(stacks, pid, tid, start, end, per)
            stalls.append(
                {
                    "start_s": round((start - t0) / 1e9, 4),
                    "duration_s": round(int(st["dur_ns"][k]) / 1e9, 4),
                    "state": _state(by_wait, thr),
                    "time_by_wait": by_wait,
                    "ended": bool(st["ended"][k]),
                    "stack": [_frame_str(f) for f in frames],
                    "culprit": culprit(frames),
                    "stack_t_s": None if stack_t is None else round((stack_t - t0) / 1e9, 4),
                    "stack_trigger": trig,
                }
            )
        durs = st["dur_ns"] / 1e9
        share = busy_ns / span_ns if span_ns else 0.0
        out.append(
            {
                **lp,
                "thread_name": _name(stacks, r, pid, tid),
                "start_s": round((a - t0) / 1e9, 4),
                "observed_s": round(span_ns / 1e9, 4),
                "busy_s": round(busy_ns / 1e9, 4),
                "cpu_s": round(cpu_ns / 1e9, 4),
                "blocked_s": round(blocked_ns / 1e9, 4),
                "queued_s": round(queued_ns / 1e9, 4),
                "busy_share": round(share, 4),
                "saturated": bool(share >= SATURATED_SHARE),
                "longest_stall_s": round(float(durs.max()), 4) if len(durs) else 0.0,
                "threshold_s": thr,
                "stalls": stalls,
                "busy_stretches": _distribution(durs),
                "tasks": TASKS_NOTE,
            }
        )
    return out


def _distribution(durs: np.ndarray) -> dict[str, Any]:
    """Count and quantiles of busy stretch lengths; counts per bucket."""
    edges = (0.0, *BUCKETS_S, float("inf"))
    names = ["<10ms", "10-100ms", "100ms-1s", ">=1s"]
    counts = np.histogram(durs, bins=edges)[0] if len(durs) else [0] * len(names)
    q = (lambda p: round(float(np.quantile(durs, p)), 4)) if len(durs) else (lambda p: 0.0)
    return {
        "count": len(durs),
        "p50_s": q(0.5),
        "p90_s": q(0.9),
        "p99_s": q(0.99),
        "by_length": {n: int(c) for n, c in zip(names, counts, strict=True)},
    }


def _name(stacks: pd.DataFrame | None, rows: LoopRows, pid: int, tid: int) -> str:
    if stacks is not None and len(stacks):
        s = stacks[(stacks["pid"] == pid) & (stacks["tid"] == tid)]
        named = s["thread_name"].fillna("").astype(str)
        named = named[named != ""]
        if len(named):
            return str(named.iloc[-1])
    return rows.ncats[rows.names[-1]] if len(rows.names) else ""
