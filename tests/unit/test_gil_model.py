"""The GIL model (analysis/gil.py) on frames with a known truth: every rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from circuit.analysis.gil import (
    combine,
    gil_intervals,
    gil_metrics,
    holder_runs,
    holder_timeline,
    python_pids,
)
from circuit.analysis.summary import summarize_frames
from circuit.tracer.schema import GIL_FIELDS, PROC_FIELDS, PROCESS_FIELDS, THREAD_FIELDS
from tests.support.gil_sim import MS, Sim, hashing, turns, with_idle

P100, P1K = 10 * MS, MS


def _thread(tid: int, t: int, wait: str, cpu: int = 0, delay: int = 0, pid: int = 1) -> tuple:
    state = "R" if wait == "running" else "S"
    return (t, pid, tid, "t", state, wait, 202, 0, "", cpu, 0, cpu, delay, 0, 0, 0)


def _threads(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=[c for c, _ in THREAD_FIELDS])
    df["wait"] = df["wait"].astype("category")
    return df


def _gil(rows: list[tuple[int, int, int, int, int]]) -> pd.DataFrame:
    """rows: (t_ns, pid, locked, holder, switches)."""
    return pd.DataFrame(rows, columns=[c for c, _ in GIL_FIELDS])


def _maps(*pids: int) -> pd.DataFrame:
    """Each pid maps a python image: it is a Python process."""
    return pd.DataFrame(
        [(0, p, 0x1000, 0x2000, "/usr/bin/python3.12", "rw-p") for p in pids],
        columns=["t_ns", "pid", "start", "end", "path", "perms"],
    )


def _by_tid(m: dict) -> dict[int, dict]:
    return {t["tid"]: t for t in m["threads"]}


# -- wait: only a thread asleep on the GIL waits for it ----------------------------


@pytest.mark.parametrize("period", [P100, P1K])
@pytest.mark.parametrize("source", ["interpreter", "futex"])
def test_runnable_threads_on_oversubscribed_cpus_never_wait_for_the_gil(
    period: int, source: str
) -> None:
    # 4 threads hashing GIL-free on 2 cores: half of their time runnable in
    # the run queue while another thread (sometimes the GIL holder) runs.
    sim = hashing(4, 2, 4.0)
    th, gil = sim.sample(period, gil_rows=source == "interpreter")
    assert (th["run_delay_ns"].groupby(th["tid"]).max() > 1.5e9).all()  # really oversubscribed
    m = gil_metrics(th, gil, _maps(1), period)
    assert m["source"] == source
    assert len(m["threads"]) == 4
    for t in m["threads"]:
        assert t["wait_s"] == 0.0 and t["contention"] == 0.0, t
    assert m["processes"][0]["contention"] == 0.0
    assert m["contention"] == 0.0


def test_wait_is_the_sampled_time_in_gil_and_nothing_else() -> None:
    # each sample stands for the time to the thread's next one; the last for
    # one period
    rows = [
        _thread(1, 0, "gil"),
        _thread(1, 3 * MS, "running", cpu=MS),
        _thread(1, 4 * MS, "gil", cpu=2 * MS),
        _thread(1, 10 * MS, "gil", cpu=2 * MS),
        _thread(2, 0, "running", delay=5 * MS),  # queued for a CPU: not a GIL wait
        _thread(2, 4 * MS, "running", cpu=3 * MS, delay=6 * MS),
        _thread(2, 10 * MS, "lock", cpu=3 * MS, delay=6 * MS),  # a threading.Lock
    ]
    m = gil_metrics(_threads(rows), None, None, 2 * MS)
    t = _by_tid(m)
    assert t[1]["wait_s"] == pytest.approx((3 + 6 + 2) * 1e-3)
    assert t[1]["time_s"] == pytest.approx(12e-3)
    assert t[1]["contention"] == pytest.approx(round(11 / 12, 4))
    assert t[2]["wait_s"] == 0.0 and t[2]["time_s"] == pytest.approx(12e-3)
    assert m["processes"][0]["contention"] == pytest.approx(round(11 / 24, 4))


# -- held: from the interpreter's state, never from CPU ---------------------------


def test_held_is_the_time_the_interpreter_named_the_thread_holder() -> None:
    th = _threads(
        [_thread(tid, t * MS, "running", cpu=t * MS) for tid in (1, 2) for t in range(0, 60, 10)]
    )
    gil = _gil(
        [
            (0, 1, 1, 1, 1),
            (10 * MS, 1, 1, 1, 1),
            (20 * MS, 1, 0, 1, 1),  # free: the last holder does not hold it
            (30 * MS, 1, 1, 2, 2),
            # no reading at 40 ms: the row at 30 stands for 10 ms, not 20
            (50 * MS, 1, 1, 0, 3),  # held by a thread the reader could not name
        ]
    )
    m = gil_metrics(th, gil, None, 10 * MS)
    t = _by_tid(m)
    assert t[1]["held_s"] == pytest.approx(0.02)
    assert t[2]["held_s"] == pytest.approx(0.01)
    (p,) = m["processes"]
    assert p["held_s"] == pytest.approx(0.04)  # the unnamed holder's 10 ms too
    assert p["held_share"] == pytest.approx(0.8)  # 40 of the 50 ms read
    # both threads ran the whole time and never slept on the GIL
    assert t[1]["wait_s"] == t[2]["wait_s"] == 0.0


def test_gil_rows_stand_for_the_interval_to_the_next_sample() -> None:
    th = _threads([_thread(1, t, "running") for t in (0, 4 * MS, 9 * MS)])
    gil = _gil([(0, 1, 1, 1, 0), (9 * MS, 1, 1, 1, 0)])
    iv = gil_intervals(gil, th, 2 * MS)
    assert iv["dt_ns"].tolist() == [4 * MS, 2 * MS]


# -- contention: wait over the time of the threads that ran Python -----------------


@pytest.mark.parametrize("source", ["interpreter", "futex"])
def test_contention_counts_the_threads_that_ran_python_and_leaves_idle_ones_out(
    source: str,
) -> None:
    sim = turns(2, 4.0)
    with_idle(sim, 900, "sleep")  # never ran: out
    th, gil = sim.sample(P1K, gil_rows=source == "interpreter")
    m = gil_metrics(th, gil, None, P1K)
    t = _by_tid(m)
    assert sorted(t) == [101, 102]
    (p,) = m["processes"]
    assert p["threads"] == 2
    assert p["thread_s"] == pytest.approx(t[101]["time_s"] + t[102]["time_s"])
    assert p["contention"] == pytest.approx(p["wait_s"] / p["thread_s"], abs=1e-4)
    assert p["contention"] == pytest.approx(0.5, abs=0.02)


def test_a_thread_that_used_cpu_counts_even_when_never_seen_holding() -> None:
    # the main thread ran Python for 40 ms, then blocked in join(): it is in
    # the denominator under both sources, so both give the same figure
    figures = []
    for rows in (True, False):
        sim = turns(2, 2.0)
        sim.segs = {k: [(0, "sleep"), *v[1:]] for k, v in sim.segs.items()}
        with_idle(sim, 100, "lock", cpu_ms=40)
        th, gil = sim.sample(P100, gil_rows=rows)
        m = gil_metrics(th, gil, None, P100)
        assert sorted(_by_tid(m)) == [100, 101, 102]
        figures.append(m["contention"])
    assert figures[0] == figures[1]


# -- switches: the interpreter's counter ------------------------------------------


def test_switches_per_second_come_from_the_interpreters_counter() -> None:
    th = _threads([_thread(1, t * MS, "running") for t in range(0, 50, 10)])
    gil = _gil(
        [
            (0, 1, 1, 1, 100),
            (10 * MS, 1, 1, 1, 103),
            (20 * MS, 1, 1, 1, 110),
            (30 * MS, 1, 1, 1, 2),  # an exec: a new interpreter counts from 0
            (40 * MS, 1, 1, 1, 6),
        ]
    )
    (p,) = gil_metrics(th, gil, None, 10 * MS)["processes"]
    assert p["switches"] == 3 + 7 + 4
    assert p["counted_s"] == pytest.approx(0.04)
    assert p["switches_per_s"] == pytest.approx(14 / 0.04)


@pytest.mark.parametrize("period", [P100, P1K])
def test_switch_rate_is_exact_at_any_sampling_rate(period: int) -> None:
    sim = turns(3, 4.0, mean_hold_ms=2.0)  # hand-offs far faster than 100 Hz
    th, gil = sim.sample(period)
    (p,) = gil_metrics(th, gil, None, period)["processes"]
    truth = (len(sim.gil) - 1) / 4.0
    assert p["switches_per_s"] == pytest.approx(truth, rel=0.01)


# -- futex fallback and mixed sources --------------------------------------------


def test_without_the_interpreters_state_held_and_switches_are_not_measured() -> None:
    sim = turns(4, 2.0)
    th, _ = sim.sample(P1K)
    m = gil_metrics(th, None, None, P1K)
    assert m["source"] == "futex" and m["switches_per_s"] is None
    (p,) = m["processes"]
    assert p["source"] == "futex"
    assert p["held_s"] is None and p["held_share"] is None
    assert p["switches"] is None and p["switches_per_s"] is None
    assert all(t["held_s"] is None for t in m["threads"])
    # and the wait still is: 3 of 4 threads wait at any moment
    assert p["contention"] == pytest.approx(0.75, abs=0.02)
    assert holder_timeline(None, th, P1K).empty


def test_mixed_sources_combine_waits_and_count_switches_where_read() -> None:
    a, b = turns(2, 2.0), turns(4, 2.0, seed=3)
    b.pid = 2
    th_a, gil_a = a.sample(P1K)
    th_b, _ = b.sample(P1K, seed=1)
    m = gil_metrics(
        pd.concat([th_a, th_b], ignore_index=True), gil_a, None, P1K, {"2": "futex: no access"}
    )
    assert m["source"] == "mixed"
    pa, pb = m["processes"]
    assert (pa["source"], pb["source"]) == ("interpreter", "futex")
    assert pb["source_note"] == "futex: no access"
    assert m["switches_per_s"] == pa["switches_per_s"] is not None
    both = (pa["wait_s"] + pb["wait_s"]) / (pa["thread_s"] + pb["thread_s"])
    assert m["contention"] == pytest.approx(both, abs=1e-4)
    assert combine(m["processes"], [2])["contention"] == pb["contention"]
    assert combine(m["processes"]) == {k: m[k] for k in ("source", "contention", "switches_per_s")}


def test_no_python_process_means_no_figures() -> None:
    th = _threads([_thread(1, 0, "running", cpu=1), _thread(1, MS, "sleep", cpu=2)])
    assert python_pids(None, None, th) == set()
    m = gil_metrics(th, None, None, MS)
    assert m == {
        "source": None,
        "contention": None,
        "switches_per_s": None,
        "processes": [],
        "threads": [],
    }


# -- the same answer at 100 Hz and 1 kHz ---------------------------------------------


@pytest.mark.parametrize("n", [2, 4])
def test_100_hz_and_1_khz_agree_with_the_truth(n: int) -> None:
    sim = turns(n, 20.0)
    truth_wait = {k: sim.truth(k, "wait") for k in sim.segs}
    truth_held = {k: sim.truth(k, "hold") for k in sim.segs}
    for period in (P100, P1K):
        th, gil = sim.sample(period)
        m = gil_metrics(th, gil, None, period)
        for k, t in _by_tid(m).items():
            # sampling error: ~sqrt(p(1-p)/samples) of the thread's time
            assert t["wait_s"] == pytest.approx(truth_wait[k], abs=0.03 * 20), (period, t)
            assert t["held_s"] == pytest.approx(truth_held[k], abs=0.03 * 20), (period, t)
        assert m["contention"] == pytest.approx((n - 1) / n, abs=0.01)


# -- the holder timeline ----------------------------------------------------------------


def test_holder_runs_split_where_the_holder_or_the_counter_changes() -> None:
    th = _threads([_thread(1, t * MS, "running") for t in range(6)])
    gil = _gil(
        [
            (0, 1, 1, 1, 1),
            (1 * MS, 1, 1, 1, 1),
            (2 * MS, 1, 1, 1, 3),  # 1 -> 2 -> 1 between the samples
            (3 * MS, 1, 0, 1, 3),
            (4 * MS, 1, 1, 2, 4),
            (5 * MS, 1, 1, 2, 4),
        ]
    )
    tl = holder_timeline(gil, th, MS)
    assert tl["holder"].tolist() == [1, 1, 1, -1, 2, 2]
    runs = holder_runs(tl)
    assert runs[["start_ns", "end_ns", "holder"]].values.tolist() == [
        [0, 2 * MS, 1],
        [2 * MS, 3 * MS, 1],
        [3 * MS, 4 * MS, -1],
        [4 * MS, 6 * MS, 2],
    ]


# -- the summary carries the model ------------------------------------------------------


def test_the_summary_gil_entry_is_gil_metrics() -> None:
    sim = turns(2, 1.0)
    th, gil = sim.sample(P1K)
    procs = pd.DataFrame(
        [(0, 1, 0, "p", "/usr/bin/python3", "python3 x.py", True)],
        columns=[c for c, _ in PROC_FIELDS],
    )
    pcols = [c for c, _ in PROCESS_FIELDS]
    times = np.unique(th["t_ns"])
    processes = pd.DataFrame([[t, 1, 0, 2] + [0] * (len(pcols) - 4) for t in times], columns=pcols)
    meta = {"mode": "run", "rate_hz_achieved": 1000.0, "wall_s": 1.0, "gil_sources": {"1": "x"}}
    s = summarize_frames(meta, th, processes, procs, gil=gil)
    assert s["gil"] == gil_metrics(th, gil, None, P1K, {"1": "x"})
    assert s["gil"]["source"] == "interpreter"
    assert s["gil"]["processes"][0]["source_note"] == "x"
    for t in s["threads"]:
        g = _by_tid(s["gil"])[t["tid"]]
        assert g["wait_s"] == pytest.approx(t["time_by_wait"]["gil"], abs=1e-6)


def test_a_sim_is_what_it_says() -> None:
    # the truth the tests above rest on: holds tile the run, waits are the rest
    sim = turns(3, 1.0)
    total = sim.end_ns / 1e9
    assert sum(sim.truth(k, "hold") for k in sim.segs) == pytest.approx(total)
    for k in sim.segs:
        assert sim.truth(k, "hold", "wait") == pytest.approx(total)
    assert isinstance(Sim(1).segs, dict)
