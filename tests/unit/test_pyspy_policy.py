"""DumpPolicy on synthetic thread rows and a fake clock (pure logic).

The real-process checks of the same rules (dumps inside real waits, names of
real threads) are in tests/integration/test_pyspy_triggers.py.
"""

from __future__ import annotations

import itertools

from circuit.tracer.pyspy_policy import (
    BURST_S,
    EARLY_NS,
    EARLY_RETRY_NS,
    EARLY_TRIES,
    LONG_WAIT_NS,
    MIN_GAP_NS,
    NEW_THREADS_NS,
    RESUME_NS,
    DumpPolicy,
)

MS = 1_000_000
PERIOD = 10 * MS


def row(pid: int, tid: int, wait: str = "running", arg0: int = 0, ctx: int = 0, state: str = "S"):
    state = "R" if wait == "running" else state
    return (pid, tid, f"t{tid}", state, wait, 202, arg0, "", 0, 0, 0, 0, ctx, 0, 0)


def feed(pol: DumpPolicy, t0: int, t1: int, rows_at) -> list[tuple[int, str, int]]:
    """Samples every PERIOD from t0 to t1 (rows_at(t) -> rows of pid 1), the
    policy looked at every 2 samples; dumps it starts (pid, trigger, t)."""
    out = []
    t = t0
    while t < t1:
        pol.rows([(t, rows_at(t))])
        if (t // PERIOD) % 2 == 0:
            for pid, trig in pol.due(t):
                pol.started(pid, t, trig)
                pol.finished(pid, t + 15 * MS)
                pol.succeeded(pid)
                out.append((pid, trig, t))
        t += PERIOD
    return out


def test_first_dump_early_and_retried_while_the_interpreter_starts() -> None:
    pol = DumpPolicy()
    pol.python(0, [1])
    assert pol.due(EARLY_NS - 1) == []
    assert pol.due(EARLY_NS) == [(1, "early")]
    pol.started(1, EARLY_NS, "early")
    assert pol.failed(1, EARLY_NS + 20 * MS)  # not ready yet: retried
    assert pol.next_ns(EARLY_NS + 20 * MS) <= EARLY_NS + 20 * MS + EARLY_RETRY_NS
    t = EARLY_NS + 20 * MS + EARLY_RETRY_NS
    assert pol.due(t) == [(1, "early")]
    retries = 1
    while pol.failed(1, t):
        retries += 1
    assert retries < EARLY_TRIES + 1  # gives up: the observer then reports it
    pol.succeeded(1)
    assert not pol.failed(1, t)  # once dumped, failures are not early retries


def test_a_long_blocked_wait_gets_one_dump_inside_it() -> None:
    pol = DumpPolicy()
    pol.python(0, [1])
    pol.started(1, 0, "early")
    pol.finished(1, 10 * MS)

    def rows_at(t: int):
        # tid 2 runs, then blocks on one futex from 200 ms to 600 ms
        return [
            row(1, 1, "sleep", ctx=1),
            row(1, 2, "lock", 77, 5) if 200 * MS <= t < 600 * MS else row(1, 2),
        ]

    dumps = feed(pol, 100 * MS, 900 * MS, rows_at)
    waits = [d for d in dumps if d[1] == "long-wait"]
    # tid 1's sleep began at 100 ms (after the early dump at 0): one dump for it;
    # tid 2's wait: one, after LONG_WAIT_NS, well inside it
    assert len(waits) == 2, dumps
    t = waits[1][2]
    assert 200 * MS + LONG_WAIT_NS <= t <= 200 * MS + LONG_WAIT_NS + 2 * PERIOD


def test_short_waits_and_gil_like_waits_get_none() -> None:
    pol = DumpPolicy()
    pol.python(0, [1])
    pol.started(1, 0, "early")
    # 30 ms waits; and a futex wait woken every 5 ms (a GIL waiter: its
    # voluntary switches move at every sample)
    dumps = feed(
        pol,
        10 * MS,
        1000 * MS,
        lambda t: [
            row(1, 1, "sleep", ctx=t // (40 * MS)) if (t // (10 * MS)) % 4 else row(1, 1),
            row(1, 2, "lock", 99, ctx=t // MS),
        ],
    )
    assert dumps == []


def test_a_blocking_dump_restarting_the_wait_is_not_a_new_wait() -> None:
    pol = DumpPolicy()
    pol.python(0, [1])
    pol.started(1, 0, "early")
    pol.finished(1, 5 * MS)

    def rows_at(t: int):
        # one sleep from 20 ms on; each dump stops the thread (state t) and
        # bumps its voluntary switches twice, up to RESUME_NS after the dump
        bumps = sum(1 for s, _, _ in dumps_seen if s < t) + sum(
            1 for s, _, _ in dumps_seen if s + RESUME_NS - PERIOD < t
        )
        return [row(1, 1, "sleep", ctx=bumps)]

    dumps_seen: list[tuple[int, str, int]] = []
    t = 20 * MS
    while t < 2000 * MS:
        pol.rows([(t, rows_at(t))])
        for pid, trig in pol.due(t):
            pol.started(pid, t, trig)
            pol.finished(pid, t + 15 * MS)
            dumps_seen.append((t, trig, pid))
        t += PERIOD
    assert [d[1] for d in dumps_seen] == ["long-wait"], dumps_seen


def test_new_threads_bring_one_early_dump() -> None:
    pol = DumpPolicy()
    pol.python(0, [1])
    pol.started(1, 0, "early")
    pol.finished(1, 5 * MS)
    pool = lambda t: [row(1, 1)] + [row(1, 10 + i) for i in range(4) if t >= (300 + 5 * i) * MS]  # noqa: E731
    dumps = feed(pol, 100 * MS, 800 * MS, pool)
    assert [d[1] for d in dumps] == ["early"], dumps
    assert 300 * MS + NEW_THREADS_NS <= dumps[0][2] <= 300 * MS + NEW_THREADS_NS + 2 * PERIOD


def test_the_root_losing_its_last_worker_thread_is_an_exit_dump() -> None:
    pol = DumpPolicy()
    pol.python(0, [1, 5])  # 1: the root Python process; 5: a child
    for pid in (1, 5):
        pol.started(pid, 0, "early")
    rows = lambda t: [row(1, 1)] + ([row(1, 2)] if t < 500 * MS else [])  # noqa: E731
    dumps = feed(pol, 100 * MS, 700 * MS, rows)
    assert dumps == [(1, "exit", 500 * MS)]
    pol.rows([(900 * MS, [row(5, 5), row(5, 6)]), (910 * MS, [row(5, 5)])])
    assert pol.due(920 * MS) == []  # not the root


def test_rate_limit_per_process_and_cpu_budget() -> None:
    pol = DumpPolicy(budget=0.02, burst_s=BURST_S)
    pol.python(0, [1])
    pol.started(1, 0, "early")
    # a new 60 ms sleep every 60 ms, for 20 s: each is long enough
    dumps = feed(pol, 10 * MS, 20_000 * MS, lambda t: [row(1, 1, "sleep", ctx=t // (60 * MS))])
    times = [d[2] for d in dumps]
    assert all(b - a >= MIN_GAP_NS for a, b in itertools.pairwise(times))
    spent = len(dumps) * pol.per_dump_s
    assert spent <= BURST_S + 0.02 * 20 + pol.per_dump_s
    assert len(dumps) >= 20  # the budget is spent, not hoarded


def test_nothing_automatic_when_off() -> None:
    pol = DumpPolicy(auto=False)
    pol.python(0, [1])
    pol.rows([(t * MS, [row(1, 1, "sleep")]) for t in range(0, 500, 10)])
    assert pol.due(600 * MS) == [] and pol.next_ns(600 * MS) is None
