"""Unit tests of analysis.metrics on small hand-built frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from circuit.analysis import metrics as M
from circuit.analysis.summary import with_durations
from tests.support.report_data import MS, T0, process_frame, thread_frame

PERIOD = 10 * MS

# Thread 11: running 0-20 ms (cpu 0->20), sleeping 20-50 (nanosleep=35), running again.
# Thread 12: lock for the whole time.  Rows deliberately out of order.
ROWS = [
    (0, 1, 11, "main", "R", "running", -1, 0, 0, 0),
    (10, 1, 11, "main", "R", "running", -1, 10, 0, 1),
    (20, 1, 11, "main", "S", "sleep", 35, 20, 1, 1),
    (30, 1, 11, "main", "S", "sleep", 35, 20, 1, 1),
    (40, 1, 11, "main", "S", "sleep", 35, 21, 1, 1),
    (50, 1, 11, "main", "R", "running", -1, 22, 2, 1),
    (0, 1, 12, "worker", "S", "lock", 202, 0, 0, 0),
    (10, 1, 12, "worker", "S", "lock", 202, 0, 0, 0),
]


@pytest.fixture
def threads() -> pd.DataFrame:
    return thread_frame(ROWS).sample(frac=1.0, random_state=1)


def test_state_intervals_merge_consecutive_same_state(threads: pd.DataFrame) -> None:
    iv = M.state_intervals(threads, PERIOD)
    t11 = iv[iv["tid"] == 11].reset_index(drop=True)
    assert list(t11["wait"]) == ["running", "sleep", "running"]
    assert list(t11["samples"]) == [2, 3, 1]
    assert list((t11["start_ns"] - T0) // MS) == [0, 20, 50]
    # the last sample of a thread stands for one period
    assert list((t11["end_ns"] - T0) // MS) == [20, 50, 60]
    assert (t11["dur_ns"] == t11["end_ns"] - t11["start_ns"]).all()
    # CPU of an interval runs to the next interval's start: 0->20, 20->22, last has none
    assert list(t11["cpu_ns"] // MS) == [20, 2, 0]
    assert list(t11["syscall"]) == [-1, 35, -1]
    t12 = iv[iv["tid"] == 12]
    assert len(t12) == 1 and t12["wait"].iloc[0] == "lock" and t12["dur_ns"].iloc[0] == 20 * MS


def test_state_intervals_tile_the_sampled_time(threads: pd.DataFrame) -> None:
    iv = M.state_intervals(threads, PERIOD)
    per_thread = iv.groupby("tid")["dur_ns"].sum()
    expected = with_durations(threads, PERIOD).groupby("tid")["dt_ns"].sum()
    assert per_thread.to_dict() == expected.to_dict()
    # no gaps or overlaps within a thread
    for _, g in iv.sort_values("start_ns").groupby("tid"):
        assert (g["start_ns"].to_numpy()[1:] == g["end_ns"].to_numpy()[:-1]).all()


def test_state_intervals_split_on_same_tid_in_other_pid() -> None:
    rows = [
        (0, 1, 5, "a", "S", "sleep", 35, 0, 0, 0),
        (0, 2, 5, "b", "S", "sleep", 35, 0, 0, 0),
    ]
    iv = M.state_intervals(thread_frame(rows), PERIOD)
    assert len(iv) == 2 and set(iv["pid"]) == {1, 2}


def test_state_intervals_empty() -> None:
    iv = M.state_intervals(thread_frame([]), PERIOD)
    assert iv.empty and "start_ns" in iv.columns


def test_time_by_wait_and_syscall(threads: pd.DataFrame) -> None:
    tw = M.time_by_wait(threads, PERIOD)
    got = {(r.tid, r.wait): round(r.seconds, 6) for r in tw.itertuples()}
    assert got == {(11, "running"): 0.03, (11, "sleep"): 0.03, (12, "lock"): 0.02}
    assert set(tw.loc[tw["tid"] == 12, "name"]) == {"worker"}
    ts = M.time_by_syscall(M.state_intervals(threads, PERIOD))
    sl = ts[(ts["tid"] == 11) & (ts["wait"] == "sleep")]
    assert sl["syscall"].tolist() == [35] and sl["seconds"].round(6).tolist() == [0.03]


def test_thread_rates_cpu_and_switches() -> None:
    # 0.5 cores for 100 ms, with 10 voluntary switches per 10 ms sample
    rows = [(t, 1, 7, "w", "R", "running", -1, t // 2, t, 0) for t in range(0, 101, 10)]
    r = M.thread_rates(thread_frame(rows), PERIOD, T0, bin_ns=50 * MS)
    assert list(r["t_s"].round(3)) == [0.025, 0.075, 0.125]
    # first bin misses the first sample's increment (no predecessor): 4 of 5 steps
    assert r["cpu"].round(3).tolist() == [0.4, 0.5, 0.1]
    assert r["ctx_vol"].round(1).tolist() == [800.0, 1000.0, 200.0]
    assert (r["ctx_invol"] == 0).all()


def test_thread_rates_do_not_difference_across_threads() -> None:
    rows = [
        (0, 1, 7, "a", "R", "running", -1, 1000, 0, 0),
        (10, 1, 7, "a", "R", "running", -1, 1000, 0, 0),
        (0, 1, 8, "b", "R", "running", -1, 0, 0, 0),
        (10, 1, 8, "b", "R", "running", -1, 0, 0, 0),
    ]
    r = M.thread_rates(thread_frame(rows), PERIOD, T0, bin_ns=100 * MS)
    assert (r["cpu"] == 0).all()


def test_process_cpu_bins() -> None:
    pr = process_frame([{"t_ms": t, "pid": 3, "cpu_ms": t} for t in range(0, 201, 10)])
    pc = M.process_cpu(pr, PERIOD, T0, bin_ns=100 * MS)
    assert pc["cpu"].round(2).tolist()[:2] == [0.9, 1.0]


def test_fd_counts_sum_over_processes_by_kind() -> None:
    pr = process_frame(
        [
            {"t_ms": 0, "pid": 1, "fds_socket": 2, "fds_file": 3},
            {"t_ms": 0, "pid": 2, "fds_socket": 1, "fds_epoll": 1},
            {"t_ms": 10, "pid": 1, "fds_socket": 5, "fds_file": 3},
        ]
    )
    fc = M.fd_counts(pr, T0)
    assert fc["t_s"].tolist() == [0.0, 0.01]
    assert fc["socket"].tolist() == [3, 5]
    assert fc["epoll"].tolist() == [1, 0]
    assert fc["total"].tolist() == [7, 8]
    per_pid = M.fd_counts(pr, T0, by_pid=True)
    assert len(per_pid) == 3
    peaks = M.fd_peaks(pr)
    assert peaks.loc[1, "socket"] == 5 and peaks.loc[2, "epoll"] == 1
    assert peaks.loc[1, "total"] == 8


def test_task_spans_pair_starts_and_ends() -> None:
    marks = pd.DataFrame(
        {
            "t_ns": [T0, T0 + 5 * MS, T0 + 30 * MS, T0 + 40 * MS, T0 + 50 * MS, T0 + 60 * MS],
            "pid": [1, 1, 1, 1, 1, 2],
            "tid": [11, 12, 11, 11, 11, 20],
            "name": [
                "task-start",
                "task-start",
                "task-end",
                "task-start",
                "task-end",
                "task-start",
            ],
            "field_task": [0, 1, 0, 0, 0, 0],
        }
    )
    sp = M.task_spans(marks)
    assert len(sp) == 4
    a = sp[(sp["pid"] == 1) & (sp["task"] == "0")]
    assert ((a["dur_s"] * 1000).round(3)).tolist() == [30.0, 10.0]  # id 0 reused sequentially
    assert sp.loc[(sp["task"] == "1"), "end_ns"].isna().all()  # never ended
    assert sp.loc[(sp["pid"] == 2), "end_ns"].isna().all()  # pid 2's task 0 is another task


def test_task_spans_without_task_marks() -> None:
    marks = pd.DataFrame({"t_ns": [T0], "pid": [1], "tid": [1], "name": ["phase"]})
    assert M.task_spans(marks).empty
    assert M.task_spans(pd.DataFrame()).empty


def test_intervals_vectorised_on_a_large_frame() -> None:
    # 200k samples of 100 threads flipping state every 10 samples: checks the
    # merge on a size where a per-row loop would show, and the tiling invariant.
    n_threads, per_thread = 100, 2000
    tid = np.repeat(np.arange(n_threads), per_thread)
    t = np.tile(np.arange(per_thread), n_threads) * PERIOD + T0
    flip = (np.tile(np.arange(per_thread), n_threads) // 10) % 2
    df = pd.DataFrame(
        {
            "t_ns": t,
            "pid": np.int32(1),
            "tid": tid.astype("int32"),
            "name": pd.Categorical(["w"] * len(t)),
            "state": pd.Categorical(np.where(flip, "S", "R")),
            "wait": pd.Categorical(np.where(flip, "sleep", "running")),
            "syscall": np.int16(-1),
            "user_ns": 0,
            "system_ns": 0,
            "cpu_ns": 0,
        }
    )
    iv = M.state_intervals(df, PERIOD)
    assert len(iv) == n_threads * per_thread // 10
    assert (iv["samples"] == 10).all()
    assert iv["dur_ns"].sum() == len(df) * PERIOD
