"""Run-queue time split out of the samples (analysis/runnable.py) on hand-built frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from circuit.analysis.metrics import state_intervals
from circuit.analysis.runnable import runnable_ns, split_rows
from circuit.analysis.summary import summarize_frames, time_by, with_durations

MS = 1_000_000


def _threads(rows: list[tuple]) -> pd.DataFrame:
    """rows: (t_ms, tid, wait, cpu_ms, run_delay_ms)."""
    df = pd.DataFrame(
        [
            (t * MS, 1, tid, f"t{tid}", "R" if w == "running" else "S", w, c * MS, rd * MS)
            for t, tid, w, c, rd in rows
        ],
        columns=["t_ns", "pid", "tid", "name", "state", "wait", "cpu_ns", "run_delay_ns"],
    )
    for c in ("user_ns", "system_ns", "ctx_vol", "ctx_invol"):
        df[c] = 0
    df["syscall"] = -1
    return df


def _waits(df: pd.DataFrame, tid: int = 1) -> dict[str, float]:
    d = with_durations(df, 10 * MS)
    row = time_by(d, "wait").loc[(1, tid)]
    return {k: round(v * 1000, 3) for k, v in row.items() if v}


def test_run_delay_within_one_interval_is_cut_from_its_wait():
    # asleep at 0; woke, queued 3 ms, ran 2 ms before the sample at 10 ms
    df = _threads([(0, 1, "sleep", 0, 0), (10, 1, "sleep", 2, 3), (20, 1, "sleep", 2, 3)])
    assert _waits(df) == {"sleep": 27.0, "runnable": 3.0}


def test_the_runnable_row_ends_where_the_thread_got_its_cpu():
    df = _threads([(0, 1, "lock", 0, 0), (10, 1, "lock", 2, 3), (20, 1, "lock", 2, 3)])
    d = with_durations(df, 10 * MS)
    assert d["runnable_ns"].tolist() == [3 * MS, 0, 0]
    rows = split_rows(d)
    assert rows["wait"].astype(str).tolist() == ["lock", "runnable", "lock", "lock"]
    assert rows["state"].astype(str).tolist() == ["S", "R", "S", "S"]
    assert rows["t_ns"].tolist() == [0, 7 * MS, 10 * MS, 20 * MS]
    assert rows["dt_ns"].tolist() == [7 * MS, 3 * MS, 10 * MS, 10 * MS]
    assert rows["sampled"].tolist() == [True, False, True, True]
    # the rows tile the thread's time: each starts where the one before ends
    assert (rows["t_ns"] + rows["dt_ns"]).tolist()[:-1] == rows["t_ns"].tolist()[1:]


def test_the_timeline_draws_runnable_intervals_and_counts_samples():
    df = _threads([(0, 1, "lock", 0, 0), (10, 1, "lock", 2, 3), (20, 1, "lock", 2, 3)])
    iv = state_intervals(df, 10 * MS)
    assert iv["wait"].tolist() == ["lock", "runnable", "lock"]
    assert iv["dur_ns"].tolist() == [7 * MS, 3 * MS, 20 * MS]
    assert iv["samples"].tolist() == [1, 0, 2]


def test_time_by_state_counts_queued_time_as_r():
    df = _threads([(0, 1, "sleep", 0, 0), (10, 1, "sleep", 2, 3), (20, 1, "sleep", 2, 3)])
    row = time_by(with_durations(df, 10 * MS), "state").loc[(1, 1)]
    assert round(row["S"] * 1000, 3) == 27.0 and round(row["R"] * 1000, 3) == 3.0


def test_a_long_queue_wait_spills_back_over_the_rows_it_hid_behind():
    # a preempted thread keeps its `running` row while queued (its schedstat
    # does not move): 25 ms of run delay show up at once when it runs again
    df = _threads(
        [
            (0, 1, "running", 0, 0),
            (10, 1, "running", 5, 0),  # ran 5 ms, then queued
            (20, 1, "running", 5, 0),  # queued the whole interval
            (30, 1, "running", 5, 0),  # queued the whole interval
            (40, 1, "running", 10, 25),  # queued 5 ms more, ran 5 ms
        ]
    )
    w = _waits(df)
    assert w["runnable"] == 25.0
    assert w["running"] == 25.0  # 10 ms of CPU + the last sample's period


def test_spilled_time_never_takes_cpu_time():
    key = np.zeros(3, dtype=np.int64)
    dt = np.array([10, 10, 10]) * MS
    cpu = np.array([0, 10, 12]) * MS  # the first interval was all CPU
    rd = np.array([0, 0, 15]) * MS  # 15 ms queued, only 8 ms of room
    r = runnable_ns(key, dt, cpu, rd)
    assert r.tolist() == [0, 8 * MS, 0]


def test_run_delay_never_crosses_to_another_thread():
    df = _threads(
        [
            (0, 1, "sleep", 0, 0),
            (10, 1, "sleep", 0, 0),
            (0, 2, "sleep", 0, 0),
            (10, 2, "sleep", 5, 30),  # 30 ms of delay, 10 ms of room
        ]
    )
    assert _waits(df, 1) == {"sleep": 20.0}
    assert _waits(df, 2) == {"sleep": 15.0, "runnable": 5.0}


def test_frames_without_run_delay_have_nothing_runnable():
    df = _threads([(0, 1, "sleep", 0, 0), (10, 1, "sleep", 2, 3)]).drop(columns="run_delay_ns")
    assert with_durations(df, 10 * MS)["runnable_ns"].tolist() == [0, 0]


def test_summary_reports_runnable_and_keeps_the_sample_count():
    threads = _threads([(0, 1, "gil", 0, 0), (10, 1, "gil", 1, 4), (20, 1, "running", 1, 4)])
    procs = pd.DataFrame(
        {"t_ns": [0, 20 * MS], "pid": 1, "ppid": 0, "user_ns": 0, "system_ns": 0}
    ).assign(rss_bytes=0, num_threads=1, fds=0)
    from circuit.tracer.schema import FD_KIND_COLUMNS

    for c in FD_KIND_COLUMNS:
        procs[c] = 0
    meta = {"mode": "run", "wall_s": 0.03, "rate_hz_achieved": 100.0, "samples": 3}
    s = summarize_frames(meta, threads, procs, pd.DataFrame())
    (t,) = s["threads"]
    assert t["time_by_wait"]["runnable"] == 0.004
    assert t["time_by_wait"]["gil"] == 0.016  # 6 ms before the wake-up, then 10 ms
    assert t["run_delay_s"] == 0.004
    assert s["thread_samples"] == 3
