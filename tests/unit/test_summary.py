"""Summary arithmetic on small hand-built frames."""

from __future__ import annotations

import pandas as pd

from circuit.analysis.summary import summarize_frames, with_durations

MS = 1_000_000


def _threads(rows):
    cols = ["t_ns", "pid", "tid", "name", "state", "wait", "cpu_ns", "user_ns", "system_ns"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("ctx_vol", "ctx_invol", "run_delay_ns"):
        df[c] = 0
    return df


def _procs(rows):
    df = pd.DataFrame(rows, columns=["t_ns", "pid", "ppid", "user_ns", "system_ns"])
    df["rss_bytes"] = 100
    df["num_threads"] = 1
    for c in ("fds", "fds_file", "fds_socket", "fds_pipe", "fds_epoll", "fds_eventfd"):
        df[c] = 0
    for c in ("fds_timerfd", "fds_signalfd", "fds_inotify", "fds_device", "fds_other"):
        df[c] = 0
    return df


def test_with_durations_uses_next_sample_and_period_for_last():
    df = _threads(
        [
            (0, 1, 1, "a", "S", "sleep", 0, 0, 0),
            (10 * MS, 1, 1, "a", "S", "sleep", 0, 0, 0),
            (30 * MS, 1, 1, "a", "R", "running", 0, 0, 0),
            (0, 1, 2, "b", "R", "running", 0, 0, 0),
        ]
    )
    d = with_durations(df, 10 * MS)
    assert d[d.tid == 1].dt_ns.tolist() == [10 * MS, 20 * MS, 10 * MS]
    assert d[d.tid == 2].dt_ns.tolist() == [10 * MS]


def test_summary_times_and_parallelism_run_mode():
    threads = _threads(
        [
            (0, 1, 1, "main", "S", "sleep", 1 * MS, 0, 0),
            (10 * MS, 1, 1, "main", "S", "sleep", 1 * MS, 0, 0),
            (20 * MS, 1, 1, "main", "R", "running", 5 * MS, 0, 0),
        ]
    )
    procs = _procs([(0, 1, 0, 10 * MS, 0), (20 * MS, 1, 0, 20 * MS, 10 * MS)])
    meta = {"mode": "run", "wall_s": 0.03, "rate_hz_achieved": 100.0, "samples": 3}
    s = summarize_frames(meta, threads, procs, pd.DataFrame())
    (t,) = s["threads"]
    assert t["time_by_wait"]["sleep"] == 0.02 and t["time_by_wait"]["running"] == 0.01
    assert t["time_by_state"] == {"S": 0.02, "R": 0.01}
    assert t["cpu_s"] == 0.005  # run mode: absolute counters
    assert s["cpu_user_s"] == 0.02 and s["cpu_system_s"] == 0.01
    assert abs(s["parallelism"] - 1.0) < 1e-9


def test_attach_mode_counts_from_first_sample_but_new_threads_from_zero():
    threads = _threads(
        [
            (0, 1, 1, "old", "R", "running", 500 * MS, 0, 0),
            (10 * MS, 1, 1, "old", "R", "running", 505 * MS, 0, 0),
            (10 * MS, 1, 2, "new", "R", "running", 3 * MS, 0, 0),
        ]
    )
    procs = _procs([(0, 1, 0, 900 * MS, 0), (10 * MS, 1, 0, 910 * MS, 0)])
    meta = {"mode": "attach", "wall_s": 0.02, "rate_hz_achieved": 100.0}
    s = summarize_frames(meta, threads, procs, pd.DataFrame())
    by_tid = {t["tid"]: t for t in s["threads"]}
    assert by_tid[1]["cpu_s"] == 0.005
    assert by_tid[2]["cpu_s"] == 0.003
    assert s["cpu_user_s"] == 0.01
    assert s["samples"] == 2


def test_the_summary_text_never_rounds_some_time_to_zero() -> None:
    from circuit.commands.summary import _fmt_waits

    assert _fmt_waits({"sleep": 9.9, "gil": 0.01, "lock": 0.04}, 10.0) == (
        "sleep 99%, lock <1%, gil <1%"
    )
    assert _fmt_waits({"poll": 5.0, "running": 5.0}, 10.0) == "poll 50%, running 50%"


def test_a_process_is_never_credited_less_cpu_than_its_threads_used():
    # A child reaped by its parent before circuit saw the zombie: its
    # user/system counters (read every 20 ms at most) are 20 ms old, its
    # thread's schedstat CPU is from the last sample.
    threads = _threads(
        [
            (0, 2, 2, "child", "R", "running", 0, 0, 0),
            (490 * MS, 2, 2, "child", "R", "running", 500 * MS, 480 * MS, 0),
        ]
    )
    procs = _procs([(0, 2, 1, 0, 0), (490 * MS, 2, 1, 360 * MS, 120 * MS)])
    meta = {"mode": "run", "wall_s": 0.5, "rate_hz_achieved": 100.0, "samples": 2}
    s = summarize_frames(meta, threads, procs, pd.DataFrame())
    (p,) = s["processes"]
    assert p["cpu_s"] == 0.5  # the thread's 500 ms, not the counters' 480
    assert p["cpu_user_s"] == 0.375 and p["cpu_system_s"] == 0.125  # the counters' split
    assert s["cpu_s"] == 0.5
    # ...and never less than the counters either (threads that were never seen)
    procs = _procs([(0, 2, 1, 0, 0), (490 * MS, 2, 1, 600 * MS, 0)])
    assert summarize_frames(meta, threads, procs, pd.DataFrame())["cpu_s"] == 0.6


def test_the_gil_line_says_what_the_figures_rest_on() -> None:
    from circuit.commands.summary import _gil_line

    base = {"pid": 7, "threads": 3, "wait_s": 1.5, "thread_s": 3.0, "contention": 0.5}
    futex = {**base, "source": "futex", "source_note": "futex: no permission to read memory"}
    line = _gil_line({**futex, "held_s": None, "held_share": None, "switches_per_s": None})
    assert line == (
        "PID 7: contention 0.50 (3 threads ran Python, waited 1.500 s of 3.000 s); "
        "holder and hand-offs not measured [futex: no permission to read memory]"
    )
    inter = {**base, "source": "interpreter", "source_note": "interpreter 3.12"}
    line = _gil_line({**inter, "held_s": 0.9, "held_share": 0.9, "switches_per_s": 200.0})
    assert line.endswith(", held 0.900 s (90% of the time), 200 hand-offs/s [interpreter 3.12]")
