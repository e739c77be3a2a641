"""Event loop stalls on synthetic frames (pure logic), and the policy's
loop-stall dump trigger on synthetic rows. The real-program checks are in
tests/integration/test_loops.py."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from circuit.analysis.findings.loops import KIND, findings_of
from circuit.analysis.loops import busy_stretches, find_loops, loop_figures, threshold_s
from circuit.tracer.pyspy_policy import LOOP_STALL_NS, MIN_GAP_NS, DumpPolicy
from circuit.tracer.waits import syscall_table

MS = 1_000_000
EPOLL = syscall_table("x86_64")["epoll_wait"]
SLEEP = syscall_table("x86_64")["clock_nanosleep"]
META = {
    "start_ns": 0,
    "rate_hz_achieved": 100.0,
    "machine": "x86_64",
    "stop_reason": "target exited",
}

LOOP_FRAMES = [
    {"name": "select", "file": "/usr/lib/python3.11/selectors.py", "line": 468},
    {"name": "_run_once", "file": "/usr/lib/python3.11/asyncio/base_events.py", "line": 1884},
    {"name": "run_forever", "file": "/usr/lib/python3.11/asyncio/base_events.py", "line": 607},
]
BLOCK_FRAMES = [
    {"name": "load_config", "file": "/app/service.py", "line": 12},
    {"name": "handler", "file": "/app/service.py", "line": 20},
    {"name": "_run", "file": "/usr/lib/python3.11/asyncio/events.py", "line": 80},
    *LOOP_FRAMES[1:],
]


def samples(states: str, pid: int = 1, tid: int = 1, period: int = 10 * MS) -> pd.DataFrame:
    """One thread's samples every ``period``: ``.`` idle in epoll_wait on fd
    3, ``s`` time.sleep, ``r`` running, ``t`` stopped by a dump, ``p``
    epoll_wait on another fd (fd 7)."""
    rows = []
    cpu = 0  # the CPU counter: a running sample runs until the next one
    for i, c in enumerate(states):
        state, wait, sc, arg0 = {
            ".": ("S", "poll", EPOLL, 3),
            "s": ("S", "sleep", SLEEP, 1),
            "r": ("R", "running", -1, 0),
            "t": ("t", "other", EPOLL, 3),
            "p": ("S", "poll", EPOLL, 7),
        }[c]
        rows.append(
            {
                "t_ns": i * period,
                "pid": pid,
                "tid": tid,
                "name": "python3",
                "state": state,
                "wait": wait,
                "syscall": sc,
                "arg0": arg0,
                "cpu_ns": cpu,
                "user_ns": 0,
                "system_ns": 0,
                "run_delay_ns": 0,
            }
        )
        cpu += period if c == "r" else 0
    return pd.DataFrame(rows)


def stacks(rows: list[tuple[int, int, int, list[dict[str, Any]]]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "t_ns": t,
                "end_ns": t + 5 * MS,
                "pid": pid,
                "tid": tid,
                "thread_name": "MainThread",
                "trigger": "loop-stall",
                "frames": fr,
            }
            for t, pid, tid, fr in rows
        ]
    )


def test_a_busy_stretch_is_measured_midway_between_the_samples_around_it() -> None:
    """Idle, then 3 sleeping samples (t = 20..40 ms), idle from 50 ms: it
    left the selector between 10 and 20 ms, came back between 40 and 50:
    15 ms to 45 ms, 30 ms."""
    th = samples("..sss...")
    df = th.assign(dt_ns=10 * MS)
    st = busy_stretches(df, EPOLL, 3)
    assert list(st["start_ns"]) == [15 * MS]
    assert list(st["end_ns"]) == [45 * MS]
    assert st.attrs["span"] == (0, 80 * MS)


def test_stall_threshold_and_state_and_stack_taken_during_it() -> None:
    th = samples("." * 10 + "s" * 15 + "." * 10 + "rr" + "." * 5)
    st = stacks([(20 * MS, 1, 1, LOOP_FRAMES), (130 * MS, 1, 1, BLOCK_FRAMES)])
    (lp,) = loop_figures(META, th, st)
    assert lp["identified_by"] == "stack" and lp["epfd"] == 3
    (stall,) = lp["stalls"]  # the 20 ms stretch of running is under 0.1 s
    assert stall["start_s"] == pytest.approx(0.095)
    assert stall["duration_s"] == pytest.approx(0.15)
    assert stall["state"] == "sleep"
    assert stall["culprit"] == "load_config (service.py:12)"
    assert stall["stack"][1] == "handler (service.py:20)"
    assert lp["busy_stretches"]["count"] == 2
    assert lp["busy_s"] == pytest.approx(0.17)
    assert lp["longest_stall_s"] == pytest.approx(0.15)
    # a higher threshold: no stall; a lower one: both
    assert loop_figures(META, th, st, threshold=0.2)[0]["stalls"] == []
    assert len(loop_figures(META, th, st, threshold=0.02)[0]["stalls"]) == 2
    assert threshold_s({"loop_threshold_s": 0.25}) == 0.25
    assert threshold_s({}) == 0.1


def test_a_dump_outside_the_stall_or_showing_the_selector_is_not_its_stack() -> None:
    th = samples("." * 10 + "s" * 15 + "." * 10)
    st = stacks([(20 * MS, 1, 1, BLOCK_FRAMES), (130 * MS, 1, 1, LOOP_FRAMES)])
    (stall,) = loop_figures(META, th, st)[0]["stalls"]
    assert stall["stack"] == [] and stall["culprit"] == ""


def test_samples_stopped_by_a_dump_keep_the_status_before_them() -> None:
    """A blocking dump stops an idle loop (state t): not busy; one that stops
    a stalled loop: still stalled."""
    idle = samples("." * 5 + "tttttttttttttttt" + "." * 5)
    assert loop_figures(META, idle)[0]["stalls"] == []
    stalled = samples("." * 5 + "sssss" + "tttttttttt" + "sssss" + "." * 5)
    (stall,) = loop_figures(META, stalled)[0]["stalls"]
    assert stall["duration_s"] == pytest.approx(0.2)


def test_another_epoll_fd_is_not_the_selector() -> None:
    """A poll on another epoll fd (a library's own) is busy for the loop."""
    th = samples("." * 20 + "p" * 15 + "." * 20)
    (lp,) = loop_figures(META, th)
    assert lp["epfd"] == 3 and lp["identified_by"] == "epoll"
    assert [s["duration_s"] for s in lp["stalls"]] == [pytest.approx(0.15)]


def test_a_python_thread_without_loop_frames_is_no_loop() -> None:
    """When the process was dumped, the thread needs a stack showing a loop."""
    th = samples("." * 10)
    other = [{"name": "serve_forever", "file": "/usr/lib/python3.11/socketserver.py", "line": 1}]
    assert find_loops(th, stacks([(0, 1, 1, other)]), "x86_64") == []
    # a dump from before its first epoll wait (its imports) says nothing
    early = stacks([(-50 * MS, 1, 1, other)])
    assert find_loops(th, early, "x86_64")[0]["identified_by"] == "epoll"
    assert len(find_loops(th, stacks([(0, 1, 1, LOOP_FRAMES)]), "x86_64")) == 1
    uv = [{"name": "run", "file": "/venv/lib/python3.11/site-packages/uvloop/__init__.py"}]
    assert len(find_loops(th, stacks([(0, 1, 1, uv)]), "x86_64")) == 1


def test_trailing_stretch_is_a_stall_only_if_the_run_stopped_during_it() -> None:
    th = samples("." * 10 + "s" * 30)
    assert loop_figures(META, th)[0]["stalls"] == []  # the program ended: loop closing
    attached = {**META, "stop_reason": "duration reached"}
    (stall,) = loop_figures(attached, th)[0]["stalls"]
    assert stall["ended"] is False and stall["duration_s"] == pytest.approx(0.305)


def test_busy_share_and_saturation() -> None:
    th = samples(("." + "r" * 19) * 10 + ".")  # 10 stretches of 190 ms in 2.01 s
    (lp,) = loop_figures(META, th, threshold=1.0)
    assert lp["busy_share"] == pytest.approx(1.9 / 2.01, abs=1e-4)
    assert lp["saturated"]
    (f,) = findings_of([lp])
    assert f.kind == KIND and f.severity == "warning" and "saturated" in f.title


def test_findings_one_per_stall_severity_by_length() -> None:
    th = samples("." * 10 + "s" * 15 + "." * 10 + "s" * 120 + "." * 10)
    fs = findings_of(loop_figures(META, th))
    assert [(f.kind, f.severity) for f in fs] == [(KIND, "warning"), (KIND, "critical")]
    d = fs[1].to_dict()
    assert {"kind", "severity", "start_s", "duration_s", "pid", "tid", "thread_name"} <= set(d)
    assert {"evidence", "stack"} <= set(d) and d["evidence"]["stall_s"] == pytest.approx(1.2)


# -- the policy's loop-stall trigger ---------------------------------------------


def prow(tid: int, wait: str, syscall: int, arg0: int, state: str = "S") -> tuple:
    state = "R" if wait == "running" else state
    return (1, tid, "t", state, wait, syscall, arg0, "", 0, 0, 0, 0, 0, 0, 0)


def test_policy_dumps_a_loop_once_per_stall_from_half_the_threshold() -> None:
    pol = DumpPolicy(loop_stall_ns=LOOP_STALL_NS)
    pol.python(0, [1])
    pol.procs[1].early_ns = None
    pol.procs[1].dumped = True
    t = 0
    for _ in range(30):  # idle in epoll_wait: no trigger (long-wait is its own rule)
        pol.rows([(t, [prow(1, "poll", EPOLL, 3)])])
        t += 10 * MS
    pol.procs[1].last_ns = t  # (a dump of the idle loop was just taken)
    t += MIN_GAP_NS
    start = t
    fired = []
    for _ in range(20):  # running: the loop is out of its selector
        pol.rows([(t, [prow(1, "running", -1, 0)])])
        for pid, trig in pol.due(t):
            pol.started(pid, t, trig)
            fired.append((trig, t - start))
        t += 10 * MS
    assert fired == [("loop-stall", LOOP_STALL_NS)]
    pol.rows([(t, [prow(1, "poll", EPOLL, 3)])])  # back in its selector
    t += 200 * MS
    second = t
    for _ in range(10):
        pol.rows([(t, [prow(1, "running", -1, 0)])])
        for pid, trig in pol.due(t):
            pol.started(pid, t, trig)
            fired.append((trig, t - second))
        t += 10 * MS
    assert fired[1:] == [("loop-stall", LOOP_STALL_NS)]


def test_policy_ignores_threads_never_seen_in_epoll() -> None:
    pol = DumpPolicy()
    pol.python(0, [1])
    pol.procs[1].early_ns = None
    pol.procs[1].dumped = True
    pol.procs[1].last_ns = 0
    t = MIN_GAP_NS
    for _ in range(20):
        pol.rows([(t, [prow(1, "running", -1, 0)])])
        assert pol.due(t) == []
        t += 10 * MS


def test_stall_state_queued_for_a_cpu_is_running_only_if_it_ran_the_threshold() -> None:
    from circuit.analysis.loops import _state

    # a CPU-bound callback on a busy machine: ran 0.4 s, queued 0.5 s
    assert _state({"running": 0.4, "runnable": 0.5}, 0.1) == "running"
    # a healthy loop held up by the machine: ran 0.05 s of a 0.13 s stall
    assert _state({"running": 0.05, "runnable": 0.07, "other": 0.01}, 0.1) == "runnable"
    assert _state({"sleep": 1.4, "running": 0.01, "runnable": 0.02}, 0.1) == "sleep"
    assert _state({}, 0.1) == "other"


def test_busy_time_is_the_cpu_counter_even_when_samples_miss_the_bursts() -> None:
    """Bursts shorter than a sample's gap: every sample finds the loop idle,
    but its CPU counter grew 3 ms per 10 ms: busy 30%, from the counter."""
    th = samples("." * 101)
    th["cpu_ns"] = th["t_ns"] * 3 // 10
    (lp,) = loop_figures(META, th)
    assert lp["cpu_s"] == pytest.approx(0.3)
    assert lp["busy_share"] == pytest.approx(0.3 / 1.01, abs=1e-3)
    assert lp["stalls"] == [] and lp["blocked_s"] == 0
