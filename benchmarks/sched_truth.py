"""circuit's per-thread counters and off-CPU time against the kernel's tracepoints.

    python -m benchmarks.sched_truth --rate 100 --rate 1000 --repeats 3

(from the repository root, with the venv's python) runs ``perf sched record
-a -k CLOCK_MONOTONIC -- circuit run --rate R -- PYTHON
tests/targets/sched_target.py SECONDS`` and replays the recording per thread
(benchmarks/sched_oracle.py).  For every thread of the target's tree:

* **bounds**: circuit's last row of the thread was read between its time
  ``t`` and the sampler's next tick; the kernel's counters at those moments
  bound what it may say (:func:`bounds`).  ``within`` counts the threads
  whose CPU, switches and run delay all lie inside.
* **missed**: what the thread did after circuit's last row (the kernel's
  totals minus circuit's last figures): switches and CPU a sampler cannot see.
* **off-CPU**: ``circuit summary``'s blocked time (every wait reason but
  ``running`` and ``runnable``) against the kernel's blocked time over the
  span circuit sampled, with the sampling error's bound (:func:`blocked_tolerance`).
* **waits**: ``running`` and ``runnable`` against the kernel's CPU and
  run-queue time over the same span (:func:`span_waits`).

A run in which perf dropped events (it says so, or a thread counted more
switches than the recording holds) is run again.  Writes benchmarks/results/sched_truth.json and .md; rerun it on a new kernel.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from benchmarks.oracles import target_report  # noqa: E402
from benchmarks.sched_oracle import (  # noqa: E402
    Counts,
    LostEvents,
    SchedTimeline,
    sched_events,
    sched_record_argv,
    sched_script,
    sched_unusable,
)

TARGET = ROOT / "tests" / "targets" / "sched_target.py"
PHASES = ("sleepers", "io", "gil", "short", "pool")
# circuit re-reads a thread's `status` at most this often and carries its
# switch counts in between (circuit.tracer.backends.procstate.SLOW_COUNTER_NS).
SLOW_COUNTER_NS = 20_000_000
# `schedstat` of a thread running on another CPU is brought up to date at the
# scheduler's tick (CONFIG_HZ >= 100) or when it stops running.
SCHED_TICK_NS = 10_000_000
# The kernel's tracepoints and its schedstat disagree a little at each run:
# schedstat reads the run queue's clock (taken a few µs before the switch's
# timestamp) and leaves out time spent in interrupts and stolen by the
# hypervisor.  Measured here against threads' own schedstat read at a known
# moment: -40..+60 µs per sched-in, CPU and run delay alike; and perf's run
# time above schedstat's CPU by up to 2% on a busy VM.
ORACLE_NS_PER_SCHED_IN = 100_000
ORACLE_CPU_SHARE = 0.05
# Beyond that, schedstat and the tracepoints put the line between run-queue
# wait and run elsewhere for some threads that queue (GIL turns, short
# threads, pools on saturated CPUs): measured against own readings on 6.18,
# CPU up to 3.5-5 ms above the tracepoints' run time (never more than the
# thread's own run delay), run delay often as much below theirs.  Each such
# thread's own reading says by how much (:func:`kernel_disagreement`); its
# CPU is checked within that.
# An interval this many periods long is a stall of the sampler, not a tick
# it merely missed (see blocked_tolerance).
STALL_PERIODS = 4
NOT_BLOCKED = ("running", "runnable")
COLS = ("cpu_ns", "ctx_vol", "ctx_invol", "run_delay_ns")


@dataclass
class Observation:
    """One target run under circuit and perf: the target's own readings, the
    run folder's threads and summary, the kernel's timeline."""

    rate: int
    report: dict[str, Any]
    threads: pd.DataFrame  # the run's threads table, the target's tree
    summary: dict[int, dict[str, Any]]  # summary's per-thread entries, by tid
    timeline: SchedTimeline
    period_ns: int  # what circuit takes a thread's last row to stand for


def observe(
    rate: int,
    seconds: float,
    phases: tuple[str, ...] = PHASES,
    workdir: Path | None = None,
    env: dict[str, str] | None = None,
) -> Observation:
    """Run the target under ``circuit run`` inside ``perf sched record``."""
    import circuit
    from circuit.analysis.summary import period_ns, summarize

    why = sched_unusable()
    if why is not None:
        raise RuntimeError(why)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        data, out = Path(tmp) / "perf.data", Path(tmp) / "run"
        argv = [*sched_record_argv(data), sys.executable, "-m", "circuit", "run", "-q"]
        argv += ["--no-pyspy", "--rate", str(rate), "-o", str(out), "--"]
        argv += [sys.executable, str(TARGET), str(seconds), *phases]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"circuit run under perf failed: {r.stderr.strip()[-500:]}")
        report = target_report(r.stdout)
        run = circuit.load(out)
        threads = run.threads.sort_values(["tid", "t_ns"]).reset_index(drop=True)
        timeline = SchedTimeline(sched_events(sched_script(data)), threads.tid.unique().tolist())
        missed_switches(report, timeline)
        summary = {t["tid"]: t for t in summarize(run)["threads"]}
        # The achieved rate's period, as summary gives a thread's last row (on
        # a loaded machine a "1 kHz" run may achieve half that).
        period = period_ns(run.meta)
    return Observation(rate, report, threads, summary, timeline, period)


def missed_switches(report: dict[str, Any], tl: SchedTimeline) -> None:
    """Raise LostEvents when a thread counted more switches of its own than
    the recording holds: perf dropped events without saying so (seen on a
    busy machine: 875 voluntary switches counted, 841 recorded), and every
    count of the replay after that is short."""
    for r in report["threads"]:
        if r["tid"] in tl.threads:
            got = tl.at(r["tid"], r["after_ns"])
            if r["vol"] > got.vol or r["invol"] > got.invol:
                raise LostEvents(
                    f"thread {r['tid']} counted {r['vol']}+{r['invol']} switches, "
                    f"the recording {got.vol}+{got.invol}"
                )


def next_ticks(threads: pd.DataFrame, period_ns: int) -> pd.Series:
    """Per row, the sampler's next tick after it (a row's figures were read
    before it began); one period after the last tick for the last."""
    ticks = pd.Series(sorted(threads.t_ns.unique()))
    after = dict(zip(ticks, ticks.shift(-1, fill_value=ticks.iloc[-1] + period_ns), strict=True))
    return threads.t_ns.map(after)


def bounds(
    tl: SchedTimeline, tid: int, t_ns: int, next_ns: int, ran_ns: int, shift_ns: int = 0
) -> dict[str, tuple]:
    """What the kernel allows circuit's row of ``tid`` at ``t_ns`` to say.

    * CPU (``schedstat``): read before ``next_ns``, and no older than the
      scheduler's tick before the row's time; widened by ``shift_ns``, how far
      the thread's own schedstat CPU was from the tracepoints' run time
      (:func:`kernel_disagreement`);
    * run delay: grows at a sched-in (or when a queued thread moves to
      another CPU: up to its wait so far), and is read at each sample (or
      carried while the thread was not scheduled in: unchanged then);
    * both within the two clocks' disagreement (ORACLE_NS_PER_SCHED_IN,
      ORACLE_CPU_SHARE);
    * switches: read before ``next_ns``, carried at most SLOW_COUNTER_NS (from
      ``ran_ns``, the last row at which the thread was seen to run), or while
      it was not scheduled in again, which leaves at most its last switch-out
      uncounted.
    """
    hi = tl.at(tid, next_ns)
    at_t = tl.at(tid, t_ns)
    old = tl.at(tid, ran_ns - SLOW_COUNTER_NS)
    slack = ORACLE_NS_PER_SCHED_IN * hi.sched_in
    cpu_lo = round(tl.at(tid, t_ns - SCHED_TICK_NS).run_ns * (1 - ORACLE_CPU_SHARE))
    return {
        "cpu_ns": (cpu_lo - slack - shift_ns, hi.run_ns + slack + shift_ns),
        "run_delay_ns": (at_t.delay_ns - slack, hi.delay_ns + tl.queued_at(tid, next_ns) + slack),
        "ctx_vol": (min(old.vol, hi.vol - 1), hi.vol),
        "ctx_invol": (min(old.invol, hi.invol - 1), hi.invol),
    }


def own_vs_kernel(obs: Observation, r: dict[str, Any]) -> dict[str, int]:
    """A thread's own reading (``r``) against the replay between the moments
    it was taken: by how much each figure lies outside the replay's range
    (signed ns or counts; 0 inside), and the replay's sched-ins (the
    slack's measure)."""
    tl = obs.timeline
    a, b = tl.at(r["tid"], r["t_ns"]), tl.at(r["tid"], r["after_ns"])

    def off(v: int, lo: int, hi: int) -> int:
        return v - hi if v > hi else v - lo if v < lo else 0

    return {
        "vol": off(r["vol"], a.vol, b.vol),
        "invol": off(r["invol"], a.invol, b.invol),
        "cpu_ns": off(r["cpu_ns"], a.run_ns, b.run_ns),
        "run_delay_ns": off(r["run_delay_ns"], a.delay_ns, b.delay_ns),
        "sum_ns": off(
            r["cpu_ns"] + r["run_delay_ns"], a.run_ns + a.delay_ns, b.run_ns + b.delay_ns
        ),
        "sched_in": b.sched_in,
    }


def kernel_disagreement(obs: Observation) -> dict[int, int]:
    """Per thread with its own reading, how far its schedstat CPU was from the
    tracepoints' run time (ns, absolute)."""
    return {
        r["tid"]: abs(own_vs_kernel(obs, r)["cpu_ns"])
        for r in obs.report["threads"]
        if r["tid"] in obs.timeline.threads
    }


def row_violations(obs: Observation, tids: list[int] | None = None) -> pd.DataFrame:
    """Every row (of ``tids``, default all) whose figures lie outside :func:`bounds`."""
    th = obs.threads if tids is None else obs.threads[obs.threads.tid.isin(tids)]
    th = th.assign(next_ns=next_ticks(obs.threads, obs.period_ns).loc[th.index])
    bad = []
    shift = kernel_disagreement(obs)
    for tid, rows in th.groupby("tid"):
        if tid not in obs.timeline.threads:
            continue
        ran = (rows.cpu_ns.diff() != 0) | (rows.run_delay_ns.diff() != 0)
        t_ran = rows.t_ns.where(ran).ffill()
        for row, ran_ns in zip(rows.itertuples(), t_ran, strict=True):
            b = bounds(
                obs.timeline, int(tid), row.t_ns, row.next_ns, int(ran_ns), shift.get(tid, 0)
            )
            for col, (lo, hi) in b.items():
                v = getattr(row, col)
                if not lo <= v <= hi:
                    bad.append(
                        {"tid": tid, "t_ns": row.t_ns, "col": col, "v": v, "lo": lo, "hi": hi}
                    )
    return pd.DataFrame(bad, columns=["tid", "t_ns", "col", "v", "lo", "hi"])


def blocked_tolerance(
    blocks: list[tuple[int, int]], sample_ns: np.ndarray, period_ns: int
) -> float:
    """How far a sampled blocked time may stray from the truth (ns).

    A sample stands for the time until the thread's next one, h: a block of
    length L that starts in an interval of length h is counted as h × (the
    samples that fall in it), L's error within (-h, h), with variance at
    most h × min(L, h) when the phase is random.  h is the thread's own
    interval there (``sample_ns``: its rows' times), not the requested
    period: a loaded sampler misses ticks.  Four standard deviations of the
    sum, plus one period at each end of the thread's sampled span (a row is
    read up to a tick's length after its time; its last row stands for one
    period, however long it lived), plus every stall (an interval over
    STALL_PERIODS periods) in which the thread blocked or woke: the sampler
    stalls when the CPUs are busy, which is when the threads wake and queue,
    so there the phase is not random and the error is up to the whole
    interval (measured: a short thread's last block of 0.6 ms ended 0.4 ms
    into a 12.6 ms stall, after which it queued 12 ms: 12 ms of error)."""
    sigma = math.sqrt(blocked_variance(blocks, sample_ns, period_ns))
    return 4 * sigma + 2 * period_ns + stalled_ns(blocks, sample_ns, period_ns)


def stalled_ns(blocks: list[tuple[int, int]], sample_ns: np.ndarray, period_ns: int) -> int:
    """The length of the thread's sampling stalls in which a block began or ended."""
    ends = np.append(sample_ns[1:], sample_ns[-1] + period_ns)
    long = np.flatnonzero(ends - sample_ns > STALL_PERIODS * period_ns)
    if not len(long) or not blocks:
        return 0
    edges = np.sort(np.array([t for b in blocks for t in b]))
    lo = np.searchsorted(edges, sample_ns[long], side="right")
    hi = np.searchsorted(edges, ends[long], side="left")
    return int(np.sum((ends[long] - sample_ns[long])[hi > lo]))


def blocked_variance(blocks: list[tuple[int, int]], sample_ns: np.ndarray, period_ns: int) -> float:
    """The variance bound of :func:`blocked_tolerance` (ns²)."""
    if not blocks:
        return 0.0
    ends = np.append(sample_ns[1:], sample_ns[-1] + period_ns)
    starts = np.array([a for a, _ in blocks])
    lens = np.array([z - a for a, z in blocks], dtype=np.float64)
    i = np.clip(np.searchsorted(sample_ns, starts, side="right") - 1, 0, len(sample_ns) - 1)
    h = (ends[i] - sample_ns[i]).astype(np.float64)
    return float(np.sum(h * np.minimum(lens, h)))


def circuit_blocked_ns(entry: dict[str, Any]) -> int:
    """Summary's blocked time: every wait reason but running (and runnable)."""
    waits = entry["time_by_wait"]
    return round(1e9 * sum(v for k, v in waits.items() if k not in NOT_BLOCKED))


def span_waits(
    obs: Observation, tid: int, t_rows: np.ndarray, z_ns: int, own_delay_ns: int = 0
) -> dict[str, dict[str, int]]:
    """circuit's running and runnable time for the thread (summary) and the
    kernel's CPU and run-queue time over the span circuit sampled (from its
    first row to ``z_ns``; a wait under way at either end counted up to there).

    ``runnable`` carries a tolerance: circuit places the run delay schedstat
    added between its first and last reads, so a wait under way in the first
    sampling interval may count whole, and one under way in the last may not
    count at all (the kernel's queued time there, both ends); schedstat and
    the tracepoints differ by up to ORACLE_NS_PER_SCHED_IN per sched-in, and
    by what the thread's own reading showed (``own_delay_ns``)."""
    tl = obs.timeline
    a_ns, first_end = int(t_rows[0]), int(t_rows[1]) if len(t_rows) > 1 else z_ns

    def queued(x: int, y: int) -> int:
        return tl.at(tid, y).delay_ns + tl.queued_at(tid, y) - tl.at(tid, x).delay_ns

    a, z = tl.at(tid, a_ns), tl.at(tid, z_ns)
    edges = queued(a_ns, first_end) + tl.queued_at(tid, a_ns) + queued(int(t_rows[-1]), z_ns)
    slack = ORACLE_NS_PER_SCHED_IN * (z.sched_in - a.sched_in)
    waits = obs.summary[tid]["time_by_wait"]
    return {
        "running": {
            "circuit": round(1e9 * waits.get("running", 0.0)),
            "kernel": z.run_ns - a.run_ns,
        },
        "runnable": {
            "circuit": round(1e9 * waits.get("runnable", 0.0)),
            "kernel": queued(a_ns, z_ns) - tl.queued_at(tid, a_ns),
            "tolerance": edges + slack + abs(own_delay_ns),
        },
    }


def phase_of(obs: Observation, tid: int) -> str:
    """Which phase a thread belongs to: its own reading's role, else the
    phase its life overlaps most (``main`` for the target's main thread)."""
    roles = {r["tid"]: r["role"] for r in obs.report["threads"]}
    if tid in roles:
        return "io" if roles[tid] == "server" else roles[tid]
    if tid == obs.report["pid"]:
        return "main"
    a, b = obs.timeline.span(tid)
    overlap = {n: min(b, e) - max(a, s) for n, (s, e) in obs.report["phases"].items()}
    return max(overlap, key=overlap.__getitem__) if overlap else "?"


def thread_checks(obs: Observation) -> list[dict[str, Any]]:
    """Per thread: circuit's last figures, the kernel's totals and bounds,
    and the off-CPU comparison."""
    out = []
    nxt = next_ticks(obs.threads, obs.period_ns)
    shift = kernel_disagreement(obs)
    own_delay = {
        r["tid"]: own_vs_kernel(obs, r)["run_delay_ns"]
        for r in obs.report["threads"]
        if r["tid"] in obs.timeline.threads
    }
    for tid, rows in obs.threads.groupby("tid"):
        tid = int(tid)
        if tid not in obs.timeline.threads or tid not in obs.summary:
            continue
        last = rows.iloc[-1]
        ran = rows[(rows.cpu_ns.diff() != 0) | (rows.run_delay_ns.diff() != 0)]
        ran_ns = int(ran.t_ns.iloc[-1]) if len(ran) else int(rows.t_ns.iloc[0])
        next_ns = int(nxt[rows.index[-1]])
        b = bounds(obs.timeline, tid, int(last.t_ns), next_ns, ran_ns, shift.get(tid, 0))
        total: Counts = obs.timeline.total(tid)
        t_rows = rows.t_ns.to_numpy().astype(np.int64)
        a_ns, z_ns = int(t_rows[0]), int(t_rows[-1]) + obs.period_ns
        spans = [(max(a, a_ns), min(z, z_ns)) for a, z in obs.timeline.blocks(tid)]
        spans = [(a, z) for a, z in spans if z > a]
        out.append(
            {
                "tid": tid,
                "pid": int(last.pid),
                "phase": phase_of(obs, tid),
                "samples": len(rows),
                "circuit": {c: int(last[c]) for c in COLS},
                "bounds": {c: [int(x) for x in v] for c, v in b.items()},
                "within": all(lo <= int(last[c]) <= hi for c, (lo, hi) in b.items()),
                "kernel": {
                    "cpu_ns": total.run_ns,
                    "ctx_vol": total.vol,
                    "ctx_invol": total.invol,
                    "run_delay_ns": total.delay_ns,
                    "sched_in": total.sched_in,
                },
                "waits_ns": span_waits(obs, tid, t_rows, z_ns, own_delay.get(tid, 0)),
                "blocked_ns": {
                    "circuit": circuit_blocked_ns(obs.summary[tid]),
                    "kernel": sum(z - a for a, z in spans),
                    "tolerance": blocked_tolerance(spans, t_rows, obs.period_ns),
                    "variance": blocked_variance(spans, t_rows, obs.period_ns),
                    "stalled": stalled_ns(spans, t_rows, obs.period_ns),
                },
            }
        )
    return out


def main() -> int:
    from _common import log, machine, write_results

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rate", type=int, action="append", help="Hz (repeatable; 100 and 1000)")
    ap.add_argument("--seconds", type=float, default=1.5, help="each phase's length")
    ap.add_argument("--repeats", type=int, default=3, help="rounds, rates interleaved")
    ap.add_argument("--name", default="sched_truth")
    a = ap.parse_args()
    rates = a.rate or [100, 1000]
    runs = []
    for i in range(a.repeats):
        for rate in rates:
            for _attempt in range(3):
                try:
                    obs = observe(rate, a.seconds)
                    break
                except LostEvents as e:  # a busy machine: perf's buffers overflowed
                    log(f"{rate} Hz: {e}; again")
            else:
                raise SystemExit("perf lost events three times: run it on a quieter machine")
            checks = thread_checks(obs)
            bad = row_violations(obs)
            phase = {c["tid"]: c["phase"] for c in checks}
            by = bad.assign(phase=bad.tid.map(phase)).groupby(["phase", "col"]).size()
            runs.append(
                {
                    "rate": rate,
                    "round": i,
                    "achieved_hz": round(1e9 / obs.period_ns, 1),
                    "threads": checks,
                    "rows": len(obs.threads),
                    "rows_outside": len(bad),
                    "rows_by_phase": obs.threads.tid.map(phase).value_counts().to_dict(),
                    "rows_outside_by_phase": {f"{p}.{c}": int(n) for (p, c), n in by.items()},
                }
            )
            log(
                f"round {i + 1}/{a.repeats} {rate} Hz: {len(checks)} threads, "
                f"{sum(c['within'] for c in checks)} within bounds, {len(bad)} rows outside"
            )
    data = {
        "benchmark": "sched_truth",
        "machine": machine(),
        "seconds": a.seconds,
        "phases": list(PHASES),
        "runs": runs,
    }
    write_results(a.name, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
