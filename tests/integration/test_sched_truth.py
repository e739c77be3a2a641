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

import pytest

from benchmarks.sched_oracle import sched_unusable
from benchmarks.sched_truth import (
    ORACLE_CPU_SHARE,
    ORACLE_NS_PER_SCHED_IN,
    Observation,
    observe,
    row_violations,
    thread_checks,
)

pytestmark = pytest.mark.integration

SECONDS = 0.5
# The process pool saturates both CPUs: the sampler itself then waits for a
# CPU and runs when the workers do not, so its samples are neither on time
# nor independent of the workers' states.  Its final counters are checked;
# its rows over time and its off-CPU time are not (docs/accuracy.md).
SATURATED = {"pool"}
# On this kernel (6.18, EEVDF) schedstat's run delay, read by the thread
# itself, exceeded the sched_switch/sched_waking account by up to 13 ms on a
# pool worker and 3.4 ms on a 20-switch thread: the two kernel accounts of
# run-queue time disagree beyond a derivable bound, so run delay is checked
# against the thread's own schedstat (test_sampler_truth.py), not perf.
UNCHECKED = {"run_delay_ns"}


@pytest.fixture(scope="module", params=[100, 1000], ids=["100hz", "1khz"])
def obs(request: pytest.FixtureRequest) -> Observation:
    why = sched_unusable()
    if why is not None:
        pytest.skip(why)
    return observe(request.param, SECONDS)


@pytest.fixture(scope="module")
def checks(obs: Observation) -> list[dict]:
    return thread_checks(obs)


def test_the_kernel_agrees_with_the_threads_own_readings(obs: Observation) -> None:
    # The oracle itself, against each thread's status and schedstat read as
    # its last act (the counts are from some moment between t_ns and
    # after_ns: the GIL may pass to others in between): switches exactly;
    # CPU and run delay within the two clocks' disagreement (ORACLE_*).
    compared = 0
    tl = obs.timeline
    for r in obs.report["threads"]:
        if r["tid"] not in tl.threads:
            continue  # a connection thread that lived between two samples
        a, b = tl.at(r["tid"], r["t_ns"]), tl.at(r["tid"], r["after_ns"])
        slack = ORACLE_NS_PER_SCHED_IN * b.sched_in
        assert a.vol <= r["vol"] <= b.vol and a.invol <= r["invol"] <= b.invol, (r, a, b)
        cpu_slack = slack + ORACLE_CPU_SHARE * r["cpu_ns"]
        assert a.run_ns - cpu_slack <= r["cpu_ns"] <= b.run_ns + cpu_slack, (r, a, b)
        compared += 1
    assert compared >= 20


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


def test_off_cpu_time_within_sampling_error(
    obs: Observation, checks: list[dict], request: pytest.FixtureRequest
) -> None:
    if obs.rate >= 1000:
        request.applymarker(
            pytest.mark.xfail(
                reason="open: at 1 kHz circuit's blocked time of socket-pool threads fell "
                "~12% below the kernel's (834 vs 953 ms), beyond the sampling error",
                strict=False,
            )
        )
    # Summary's blocked time (every wait reason but running and runnable)
    # against the kernel's over the span circuit sampled; the tolerance is
    # four standard deviations of a periodic sample of those very blocks
    # (benchmarks.sched_truth.blocked_tolerance).
    wrong = []
    for c in checks:
        if c["phase"] in SATURATED:
            continue
        b = c["blocked_ns"]
        if abs(b["circuit"] - b["kernel"]) > b["tolerance"]:
            wrong.append((c["tid"], c["phase"], b))
    assert not wrong, wrong[:10]
