"""benchmarks/sched_oracle.py on canned ``perf script`` text (the real thing:
tests/integration/test_sched_truth.py)."""

from __future__ import annotations

from benchmarks.sched_oracle import Counts, SchedTimeline, sched_events

# Thread 11 is born, runs 1 ms, is preempted (R+), waits 0.5 ms, runs 2 ms,
# sleeps (S) 3 ms, is woken, waits 0.25 ms, runs 1 ms and exits (X).  A name
# with spaces (a truncated "Thread-1 (work)") must not break the parse.
SCRIPT = """\
   10/10    100.000000000:   sched:sched_wakeup_new: comm=python pid=11 prio=120 target_cpu=000
    0/0     100.000100000:       sched:sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=Thread-1 (wor next_pid=11 next_prio=120
   10/11    100.001100000:       sched:sched_switch: prev_comm=Thread-1 (wor prev_pid=11 prev_prio=120 prev_state=R+ ==> next_comm=python next_pid=10 next_prio=120
   10/10    100.001600000:       sched:sched_switch: prev_comm=python prev_pid=10 prev_prio=120 prev_state=S ==> next_comm=Thread-1 (wor next_pid=11 next_prio=120
   10/11    100.003600000:       sched:sched_switch: prev_comm=Thread-1 (wor prev_pid=11 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120
    0/0     100.006600000:          sched:sched_waking: comm=Thread-1 (wor pid=11 prio=120 target_cpu=000
    0/0     100.006850000:       sched:sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=Thread-1 (wor next_pid=11 next_prio=120
   10/11    100.007850000:       sched:sched_switch: prev_comm=Thread-1 (wor prev_pid=11 prev_prio=120 prev_state=X ==> next_comm=swapper/0 next_pid=0 next_prio=120
   10/10    100.007900000: sched:sched_stat_runtime: comm=python pid=10 runtime=43925 [ns]
"""
T0 = 100_000_000_000


def test_totals() -> None:
    tl = SchedTimeline(sched_events(SCRIPT))
    assert tl.total(11) == Counts(
        run_ns=4_000_000, sched_in=3, vol=2, invol=1, delay_ns=850_000, blocked_ns=3_000_000
    )


def test_counts_at_a_moment() -> None:
    tl = SchedTimeline(sched_events(SCRIPT))
    # Mid second run: 1 ms + 0.5 ms of it; one involuntary switch; 0.6 ms queued.
    c = tl.at(11, T0 + 2_100_000)
    assert (c.run_ns, c.invol, c.vol, c.delay_ns, c.sched_in) == (1_500_000, 1, 0, 600_000, 2)
    assert tl.at(11, T0 - 1) == Counts()
    assert tl.queued_at(11, T0 + 1_300_000) == 200_000
    assert tl.queued_at(11, T0 + 2_000_000) == 0


def test_blocked_intervals() -> None:
    tl = SchedTimeline(sched_events(SCRIPT))
    assert tl.blocks(11) == [(T0 + 3_600_000, T0 + 6_600_000)]  # (its exit opens none)
    assert tl.blocked_between(11, T0 + 5_000_000, T0 + 7_000_000) == 1_600_000


def test_filter_keeps_only_the_given_threads() -> None:
    tl = SchedTimeline(sched_events(SCRIPT), tids=[11])
    assert tl.tids() == [11]


def test_blocked_tolerance_uses_the_threads_own_intervals() -> None:
    import numpy as np

    from benchmarks.sched_truth import blocked_tolerance, blocked_variance, stalled_ns

    ms = 1_000_000
    samples = np.array([0, 1, 2, 10, 11]) * ms  # a stall from 2 to 10 ms
    # A 0.5 ms block in a 1 ms interval: variance 1 × 0.5 ms²; in the
    # 8 ms stall: 8 × 0.5 (and the stall counts whole: the block ends in it).
    assert blocked_variance([(ms, ms + ms // 2)], samples, ms) == ms * ms // 2
    assert blocked_variance([(5 * ms, 5 * ms + ms // 2)], samples, ms) == 8 * ms * ms // 2
    assert stalled_ns([(5 * ms, 5 * ms + ms // 2)], samples, ms) == 8 * ms
    # A block over the whole stall, from before it to after it: no edge inside.
    assert stalled_ns([(ms, 10 * ms + ms // 2)], samples, ms) == 0
    assert stalled_ns([], samples, ms) == 0
    # The last row stands for one period.
    assert blocked_variance([(11 * ms, 11 * ms + ms // 4)], samples, ms) == ms * ms // 4
    assert blocked_tolerance([], samples, ms) == 2 * ms
