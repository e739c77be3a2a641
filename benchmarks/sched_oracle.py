"""The kernel's scheduler tracepoints as an oracle for per-thread figures.

``perf sched record -a -k CLOCK_MONOTONIC -- CMD`` records every context
switch and wake-up on the machine for the life of CMD, stamped with the
clock circuit's sampler uses (``time.monotonic_ns()``).  :func:`sched_events`
reads ``perf script`` of that recording and :class:`SchedTimeline` replays it
per thread, the way ``perf sched timehist`` does:

* a ``sched_switch`` with the thread as ``next`` starts a run (a *sched-in*);
  the time since it became runnable is **run-queue delay** (``sch delay``);
* a ``sched_switch`` with the thread as ``prev`` ends the run (**run time**)
  and is one **context switch**: involuntary when ``prev_state`` is ``R`` or
  ``R+`` (preempted, still runnable), voluntary otherwise (it blocked);
* a ``sched_waking``/``sched_wakeup``/``sched_wakeup_new`` of a blocked thread
  ends its **blocked** (off-CPU, not runnable) time.

The kernel counts ``/proc/TID/status``'s ``voluntary_ctxt_switches`` and
``nonvoluntary_ctxt_switches`` at the very place it emits ``sched_switch``,
and ``schedstat``'s run delay at the sched-in, so for a thread born while
perf records, the counts here are its whole life's.  :meth:`SchedTimeline.at`
gives them at any moment, to bound a figure circuit read at a known time.

No code of circuit is used here: benchmarks/sched_truth.py and
tests/integration/test_sched_truth.py compare circuit against it.
"""

from __future__ import annotations

import bisect
import functools
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.oracles import perf_probe

# A line of `perf script -F pid,tid,time,event,trace --ns`.
_LINE = re.compile(r"^\s*(-?\d+)/(-?\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")
_WAKE_EVENTS = frozenset({"sched:sched_waking", "sched:sched_wakeup", "sched:sched_wakeup_new"})


def sched_record_argv(out: Path) -> list[str]:
    """``perf sched record`` of the whole machine, in CLOCK_MONOTONIC, for the
    life of the command that follows (system-wide: a thread is woken from
    whatever task runs then, and preempted by any)."""
    # (-m: a large buffer per CPU, so a busy second loses no events)
    argv = ["perf", "sched", "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-m", "16M"]
    return [*argv, "-o", str(out), "--"]


@functools.cache
def sched_unusable() -> str | None:
    """Why ``perf sched record`` cannot run here, or None when it can."""
    return perf_probe(
        sched_record_argv(Path("/dev/null")), "perf sched record", "sched tracepoints", 60
    )


class LostEvents(RuntimeError):
    """perf could not keep up with the machine's scheduler events: the replay
    would miss switches, so there is no truth to compare with."""


def sched_script(data: Path) -> str:
    """``perf script`` of a sched recording, in the form :func:`sched_events` reads."""
    r = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "pid,tid,time,event,trace", "--ns"],
        capture_output=True,
        text=True,
        errors="replace",  # any task's name, system-wide: not always UTF-8
        check=True,
    )
    lost = [line for line in r.stderr.splitlines() if "lost" in line.lower()]
    if lost:
        # A lost switch breaks every count after it: no truth to compare with.
        raise LostEvents(f"perf lost events: {lost[0].strip()}")
    return r.stdout


@dataclass(frozen=True)
class Event:
    """One switch (``prev`` -> ``next``, ``prev_state``) or wake-up (``next`` woken)."""

    t_ns: int
    kind: str  # "switch" or "wake"
    prev: int
    prev_state: str
    next: int


def _ns(stamp: str) -> int:
    sec, _, frac = stamp.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def sched_events(script_text: str) -> list[Event]:
    """The switches and wake-ups of ``perf script`` text, in time order."""
    out = []
    for line in script_text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        event = m[4]
        if event == "sched:sched_switch":
            f = dict(_FIELD.findall(m[5].replace(" ==> ", " ")))
            # A name with spaces splits `comm`: the numeric fields still parse.
            if "prev_pid" not in f or "next_pid" not in f:
                continue
            out.append(
                Event(_ns(m[3]), "switch", int(f["prev_pid"]), f["prev_state"], int(f["next_pid"]))
            )
        elif event in _WAKE_EVENTS:
            f = dict(_FIELD.findall(m[5]))
            if "pid" in f:
                out.append(Event(_ns(m[3]), "wake", -1, "", int(f["pid"])))
    out.sort(key=lambda e: e.t_ns)  # per-CPU buffers: perf script sorts, but be sure
    return out


@dataclass(frozen=True)
class Counts:
    """One thread's totals from the start of the recording to some moment."""

    run_ns: int = 0
    sched_in: int = 0
    vol: int = 0
    invol: int = 0
    delay_ns: int = 0
    blocked_ns: int = 0

    def __sub__(self, o: Counts) -> Counts:
        return Counts(*(a - b for a, b in zip(self._t(), o._t(), strict=True)))

    def _t(self) -> tuple[int, ...]:
        return (self.run_ns, self.sched_in, self.vol, self.invol, self.delay_ns, self.blocked_ns)


@dataclass
class _Thread:
    state: str = "?"  # "run", "queued", "blocked", "?" (not yet seen)
    since: int = 0
    c: list[int] = field(default_factory=lambda: [0] * 6)
    times: list[int] = field(default_factory=list)
    snaps: list[tuple[int, ...]] = field(default_factory=list)
    first_ns: int | None = None
    last_ns: int = 0


_RUN, _IN, _VOL, _INVOL, _DELAY, _BLOCKED = range(6)


class SchedTimeline:
    """Per-thread counters replayed from the events, queryable at any time.

    A thread first seen already running or runnable (it was before the
    recording began) counts from its first event; one first seen being woken
    counts from there.  Counters are stepwise: run time and blocked time grow
    at each event that ends a run or a block, as the kernel's own counters do
    (``schedstat`` and ``status`` move at the switch)."""

    def __init__(self, events: Iterable[Event], tids: Sequence[int] | None = None) -> None:
        keep = None if tids is None else set(tids)
        self.threads: dict[int, _Thread] = {}
        for e in events:
            if e.kind == "wake":
                if keep is None or e.next in keep:
                    self._wake(self._get(e.next, e.t_ns), e.t_ns)
                continue
            if e.prev > 0 and (keep is None or e.prev in keep):
                self._out(self._get(e.prev, e.t_ns), e.t_ns, e.prev_state)
            if e.next > 0 and (keep is None or e.next in keep):
                self._in(self._get(e.next, e.t_ns), e.t_ns)

    def _get(self, tid: int, t: int) -> _Thread:
        th = self.threads.get(tid)
        if th is None:
            th = self.threads[tid] = _Thread(first_ns=t)
        th.last_ns = t
        return th

    @staticmethod
    def _snap(th: _Thread, t: int) -> None:
        th.times.append(t)
        # (the start of the run, or of the wait in a run queue, under way; -1 if none)
        th.snaps.append(
            (*th.c, th.since if th.state == "run" else -1, th.since if th.state == "queued" else -1)
        )

    def _wake(self, th: _Thread, t: int) -> None:
        if th.state == "blocked":
            th.c[_BLOCKED] += t - th.since
            self._snap(th, t)
        if th.state in ("blocked", "?"):
            th.state, th.since = "queued", t

    def _out(self, th: _Thread, t: int, prev_state: str) -> None:
        if th.state == "run":
            th.c[_RUN] += t - th.since
        preempted = prev_state.startswith("R")
        th.c[_INVOL if preempted else _VOL] += 1
        th.state, th.since = ("queued" if preempted else "blocked"), t
        self._snap(th, t)

    def _in(self, th: _Thread, t: int) -> None:
        if th.state == "queued":
            th.c[_DELAY] += t - th.since
        th.c[_IN] += 1
        th.state, th.since = "run", t
        self._snap(th, t)

    def tids(self) -> list[int]:
        return sorted(self.threads)

    def at(self, tid: int, t_ns: int) -> Counts:
        """The thread's counters at ``t_ns``: switches, sched-ins, delay and
        blocked time as of the last event at or before it (they move at
        events, as the kernel's do), run time up to ``t_ns`` itself (a
        running thread's CPU time grows with the clock); zeros before its
        first event."""
        th = self.threads.get(tid)
        if th is None:
            return Counts()
        i = bisect.bisect_right(th.times, t_ns)
        if not i:
            return Counts()
        *c, running_since, _ = th.snaps[i - 1]
        if running_since >= 0:
            c[_RUN] += t_ns - running_since
        return Counts(*c)

    def queued_at(self, tid: int, t_ns: int) -> int:
        """How long the thread has been waiting in a run queue at ``t_ns`` (0
        if it is not).  ``schedstat`` may count part of that wait already: a
        queued thread moved to another CPU's queue has its wait so far added
        at the move, before it runs."""
        th = self.threads.get(tid)
        i = 0 if th is None else bisect.bisect_right(th.times, t_ns)
        if not i:
            return 0
        since = th.snaps[i - 1][-1]
        return t_ns - since if since >= 0 else 0

    def total(self, tid: int) -> Counts:
        """Everything the recording saw of the thread."""
        th = self.threads.get(tid)
        return self.at(tid, th.last_ns) if th is not None else Counts()

    def span(self, tid: int) -> tuple[int, int]:
        """Its first and last event (ns)."""
        th = self.threads[tid]
        return th.first_ns or 0, th.last_ns

    def blocked_between(self, tid: int, a_ns: int, b_ns: int) -> int:
        """Nanoseconds the thread spent blocked (off-CPU, not runnable) in [a, b)."""
        th = self.threads.get(tid)
        if th is None:
            return 0
        return sum(max(0, min(b, b_ns) - max(a, a_ns)) for a, b in self.blocks(tid))

    def blocks(self, tid: int) -> list[tuple[int, int]]:
        """The thread's blocked intervals, [switch-out, wake-up); a block still
        open at the end of the recording runs to its last event."""
        th = self.threads[tid]
        out, start = [], None
        zero = (0,) * 8
        for t, prev, cur in zip(th.times, [zero, *th.snaps], th.snaps, strict=False):
            if cur[_VOL] > prev[_VOL]:
                start = t
            if start is not None and cur[_BLOCKED] > prev[_BLOCKED]:
                out.append((start, t))
                start = None
        if start is not None and th.last_ns > start:
            out.append((start, th.last_ns))
        return out
