"""circuit's per-thread counters and off-CPU time against ``perf sched``.

``tests/targets/sched_target.py`` runs its phases (sleeping threads on an idle
target, a socket thread pool against a loopback server, GIL-bound threads,
short-lived threads, a process pool larger than the machine) under
``circuit run`` inside ``perf sched record -a`` (benchmarks/sched_truth.py),
at 100 Hz and 1 kHz.  The kernel's switches and wake-ups, replayed per thread
(benchmarks/sched_oracle.py), bound what each row may say (the bounds and
their reasons: ``benchmarks.sched_truth.bounds``).  Skips, with perf's
reason, where ``perf sched record -a`` cannot run (``make perf`` installs it
when root).
"""

from __future__ import annotations

import warnings

import pytest

from benchmarks.sched_oracle import LostEvents, sched_unusable
from benchmarks.sched_truth import (
    ORACLE_CPU_SHARE,
    ORACLE_NS_PER_SCHED_IN,
    Observation,
    observe,
    own_vs_kernel,
    row_violations,
    thread_checks,
)

pytestmark = pytest.mark.integration

SECONDS = 0.5
# The process pool saturates both CPUs: the sampler itself then waits for a
# CPU and reads a row long after the row's time, beyond the next tick's, so
# the bounds of its rows over time do not hold (up to 230 of ~1500 rows
# outside in 12 runs).  Its final counters and its off-CPU time are checked
# (docs/accuracy.md).
SATURATED = {"pool"}
# schedstat's run delay and the sched_switch/sched_waking account of run-queue
# time disagree both ways beyond any bound derived from the clocks (own
# readings on 6.18: up to 36 ms above on a pool worker that migrates, 3.6 ms
# below on a 10-switch thread), so run delay is checked against the thread's
# own schedstat (test_sampler_truth.py, test_runnable.py), not perf.
UNCHECKED = {"run_delay_ns"}


@pytest.fixture(scope="module", params=[100, 1000], ids=["100hz", "1khz"])
def obs(request: pytest.FixtureRequest) -> Observation:
    why = sched_unusable()
    if why is not None:
        pytest.skip(why)
    try:
        return observe(request.param, SECONDS)
    except LostEvents as e:
        # perf records every switch on the machine; on a busy one (measured
        # here: ~3M events in a run, 3 chunks lost) its buffers overflow and
        # the replay would be wrong, so there is nothing to compare with.
        pytest.skip(f"the machine is too busy for perf to keep up: {e}")


@pytest.fixture(scope="module")
def checks(obs: Observation) -> list[dict]:
    return thread_checks(obs)


def test_the_kernel_agrees_with_the_threads_own_readings(obs: Observation) -> None:
    # The oracle itself, against each thread's status and schedstat read as
    # its last act (the counts are from some moment between t_ns and
    # after_ns: the GIL may pass to others in between): switches exactly;
    # CPU within the two clocks' disagreement (ORACLE_*).  Where CPU is off
    # by more, it is above the replay's by at most the thread's own run
    # delay: schedstat counted part of a run-queue wait as CPU (seen on 6.18
    # under load, on threads that queue: 1.8-3.5 ms on short threads, twice
    # in ~20 runs; benchmarks.sched_truth explains).  The checks below allow
    # each thread its own measured disagreement.
    compared, shifted = 0, []
    for r in obs.report["threads"]:
        if r["tid"] not in obs.timeline.threads:
            continue  # a connection thread that lived between two samples
        off = own_vs_kernel(obs, r)
        assert off["vol"] == 0 and off["invol"] == 0, (r, off)
        slack = ORACLE_NS_PER_SCHED_IN * off["sched_in"] + ORACLE_CPU_SHARE * r["cpu_ns"]
        if abs(off["cpu_ns"]) > slack:
            assert 0 < off["cpu_ns"] <= r["run_delay_ns"] + slack, (r, off)
            shifted.append((r["role"], off["cpu_ns"], off["run_delay_ns"]))
        compared += 1
    assert compared >= 20
    if shifted:
        warnings.warn(f"schedstat moved run-queue time to CPU for {shifted}", stacklevel=1)


def test_every_phase_was_sampled(checks: list[dict]) -> None:
    phases = {c["phase"] for c in checks}
    assert {"sleepers", "io", "gil", "short", "pool", "main"} <= phases, phases


def test_sleepers_switch_often(checks: list[dict]) -> None:
    # Else a count frozen after its first read could pass the bounds below.
    for c in checks:
        if c["phase"] == "sleepers":
            assert c["kernel"]["ctx_vol"] >= 100, c


@pytest.mark.parametrize("phase", ["sleepers", "io", "gil", "short", "pool", "main"])
def test_last_counters_within_the_kernels_bounds(checks: list[dict], phase: str) -> None:
    mine = [c for c in checks if c["phase"] == phase]
    assert mine
    outside = [
        (c["tid"], col, c["circuit"][col], c["bounds"][col])
        for c in mine
        for col in c["bounds"]
        if col not in UNCHECKED
        and not c["bounds"][col][0] <= c["circuit"][col] <= c["bounds"][col][1]
    ]
    assert not outside, outside[:10]


def test_rows_over_time_within_the_kernels_bounds(obs: Observation, checks: list[dict]) -> None:
    tids = [c["tid"] for c in checks if c["phase"] not in SATURATED]
    bad = row_violations(obs, tids)
    bad = bad[~bad.col.isin(UNCHECKED)]
    assert bad.empty, bad.head(10)


def test_runnable_time_is_the_kernels_queued_time(checks: list[dict]) -> None:
    # Summary's runnable time against the kernel's run-queue time over each
    # thread's sampled span, summed per phase: per thread the two differ by
    # the waits under way in its first and last sampling intervals, the
    # clocks' slack per sched-in and its own reading's disagreement
    # (benchmarks.sched_truth.span_waits); the sum of those bounds the sum.
    # (Per thread, schedstat's run delay and the tracepoints' disagree beyond
    # that now and then: 7 of ~3000 threads in 18 runs, pool workers and
    # short threads.)
    by: dict[str, list[int]] = {}
    for c in checks:
        w = c["waits_ns"]["runnable"]
        s = by.setdefault(c["phase"], [0, 0, 0])
        s[0], s[1], s[2] = s[0] + w["circuit"], s[1] + w["kernel"], s[2] + w["tolerance"]
    wrong = {p: s for p, s in by.items() if abs(s[0] - s[1]) > s[2]}
    assert not wrong, wrong
    # Queued time enough that a circuit without runnable would fail above:
    # the pool queues about half its time.
    assert by["pool"][1] > by["pool"][2], by["pool"]


def test_off_cpu_time_within_sampling_error(checks: list[dict]) -> None:
    # Summary's blocked time (every wait reason but running and runnable)
    # against the kernel's over the span circuit sampled, every phase; the
    # tolerance is four standard deviations of a sample of those very
    # blocks at the thread's own sampling intervals, which a loaded sampler
    # stretches (benchmarks.sched_truth.blocked_tolerance).
    wrong = []
    for c in checks:
        b = c["blocked_ns"]
        if abs(b["circuit"] - b["kernel"]) > b["tolerance"]:
            wrong.append((c["tid"], c["phase"], c["samples"], b))
    assert not wrong, wrong[:10]
