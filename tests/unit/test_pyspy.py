"""py-spy beside the sampler, pure parts: error messages, the stacks table and
its join by thread id, the dump schedule, bad arguments."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from circuit.analysis.pyspy import join_stacks, stacks_from_records, thread_names
from circuit.errors import CircuitError
from circuit.tracer.pyspy import ENV_PYSPY, explain, find_pyspy, request_dump


@pytest.mark.parametrize(
    ("stderr", "kind", "hint"),
    [
        ("Error: Permission Denied (os error 13)", "permission", "CAP_SYS_PTRACE"),
        ("Error: Operation not permitted (os error 1)", "permission", "ptrace_scope"),
        ("Error: Unsupported version of Python: 3.99.0", "version", "upgrade py-spy"),
        ("Error: No such process (os error 3)", "gone", ""),
        ("Error: Failed to get stack traces\n", "error", "Failed to get stack traces"),
        ("", "error", "no message"),
    ],
)
def test_explain_says_why_and_what_would_allow_it(stderr: str, kind: str, hint: str) -> None:
    k, msg = explain(stderr, 1)
    assert k == kind
    assert hint in msg


RECORDS = [
    {
        "t_ns": 100,
        "end_ns": 120,
        "pid": 1,
        "trigger": "periodic",
        "threads": [
            {
                "tid": 11,
                "thread_id": 7,
                "name": "worker",
                "owns_gil": True,
                "active": True,
                "frames": [
                    {"name": "spin", "file": "/x/app.py", "line": 3},
                    {"name": "main", "file": "/x/app.py", "line": 9},
                ],
            },
            {"tid": 1, "name": "MainThread", "owns_gil": False, "active": False, "frames": []},
        ],
    },
    {
        "t_ns": 300,
        "end_ns": 310,
        "pid": 1,
        "trigger": "demand",
        "threads": [
            {
                "tid": 11,
                "name": "worker",
                "owns_gil": False,
                "active": False,
                "frames": [{"name": "wait", "file": "/x/lib.py", "line": 5}],
            }
        ],
    },
]


def test_stacks_table_from_dump_records() -> None:
    st = stacks_from_records(RECORDS)
    assert list(st["tid"]) == [11, 1, 11]
    assert st["stack"].iloc[0] == "spin (app.py:3) <- main (app.py:9)"
    assert list(st["owns_gil"]) == [True, False, False]
    assert list(st["trigger"]) == ["periodic", "periodic", "demand"]
    assert thread_names(st) == {(1, 11): "worker", (1, 1): "MainThread"}
    assert stacks_from_records([]).empty
    # A dump as the interpreter shuts down sees the main thread, nameless:
    # the name an earlier dump gave it stands.
    final = {
        "t_ns": 400,
        "end_ns": 410,
        "pid": 1,
        "trigger": "final",
        "threads": [{"tid": 1, "name": None, "owns_gil": False, "active": False, "frames": []}],
    }
    st = stacks_from_records([*RECORDS, final])
    assert thread_names(st) == {(1, 11): "worker", (1, 1): "MainThread"}


def test_join_stacks_takes_the_latest_dump_of_the_same_thread() -> None:
    st = stacks_from_records(RECORDS)
    th = pd.DataFrame(
        {
            "t_ns": [50, 150, 350, 150, 150],
            "pid": pd.array([1, 1, 1, 1, 2], dtype="int32"),
            "tid": pd.array([11, 11, 11, 1, 11], dtype="int32"),
            "wait": ["running"] * 5,
        }
    )
    j = join_stacks(th, st)
    assert list(j["t_ns"]) == [50, 150, 350, 150, 150]  # order kept
    assert j["stack"].iloc[0] is None or pd.isna(j["stack"].iloc[0])  # before any dump
    assert j["py_name"].iloc[0] == "worker"  # but the name is known
    assert j["stack"].iloc[1].startswith("spin")
    assert j["stack"].iloc[2] == "wait (lib.py:5)"
    assert j["py_name"].iloc[3] == "MainThread"
    assert pd.isna(j["py_name"].iloc[4])  # another process's thread 11: no dump


def test_find_pyspy_and_request_dump_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_PYSPY, str(tmp_path / "nope"))
    assert find_pyspy() is None
    monkeypatch.delenv("CIRCUIT_RUN_DIR", raising=False)
    with pytest.raises(CircuitError, match="not running under circuit"):
        request_dump()
    with pytest.raises(CircuitError, match="no py-spy observer"):
        request_dump(tmp_path)


def test_auto_interval_keeps_dumps_within_their_cpu_budget() -> None:
    from circuit.tracer.pyspy import PySpyObserver
    from circuit.tracer.pyspy_policy import AUTO_BUDGET, AUTO_GUESS_S, AUTO_MIN_S

    auto = PySpyObserver()
    assert auto._interval_s(1) == pytest.approx(max(AUTO_MIN_S, AUTO_GUESS_S / AUTO_BUDGET))
    auto._dump_cpu_s, auto._dumps_done = 0.05, 5  # measured: 10 ms a dump
    assert auto._interval_s(3) == pytest.approx(3 * 0.01 / AUTO_BUDGET)
    assert auto._interval_s(0) == AUTO_MIN_S  # no Python process yet: look again soon
    auto._dump_cpu_s = 0.0001
    assert auto._interval_s(1) == AUTO_MIN_S  # cheap dumps: still at most once a second
    assert PySpyObserver(interval=0.3)._interval_s(5) == 0.3


def test_auto_dumps_one_python_process_at_a_time_in_turn(monkeypatch) -> None:
    from circuit.tracer.pyspy import PySpyObserver

    auto = PySpyObserver()
    started: list[int] = []
    monkeypatch.setattr(auto, "_is_python", lambda pid: pid != 30)  # 30: a shell, say
    monkeypatch.setattr(auto, "_start_dump", lambda pid, trigger: started.append(pid))
    auto._pids = [20, 10, 30, 40]
    assert [auto._dump_turn("periodic") for _ in range(4)] == [1, 1, 1, 1]
    assert started == [10, 20, 40, 10]
    auto._pids = []
    assert auto._dump_turn("periodic") == 0 and started == [10, 20, 40, 10]


def test_the_loop_wakes_python_for_a_due_dump_and_while_dumps_run() -> None:
    from circuit.tracer.pyspy import COLLECT_POLL_NS, PySpyObserver

    auto = PySpyObserver()
    auto._next_ns = 123
    assert auto.next_tick_ns() == 123  # the next periodic dump
    assert PySpyObserver(interval=0).next_tick_ns() is None  # none: the flush will do
    auto._inflight[7] = object()  # type: ignore[assignment]
    now = time.monotonic_ns()
    auto._next_ns = now + 10 * COLLECT_POLL_NS  # the next periodic dump: later
    # One running: looked at soon (stored, or timed out), whatever is due.
    assert now < auto.next_tick_ns() <= time.monotonic_ns() + COLLECT_POLL_NS  # type: ignore[operator]
    auto._inflight.clear()
    auto._disabled = "missing"
    assert auto.next_tick_ns() is None


def test_no_python_process_no_wake_up_until_the_pids_change(monkeypatch) -> None:
    # A round that finds no Python process (`circuit run -- sleep 5`) does
    # not ask for the next one: the flush or a new process wakes Python anyway.
    from circuit.tracer.pyspy import PySpyObserver
    from circuit.tracer.pyspy_policy import EARLY_NS

    obs = PySpyObserver(interval=0.2)
    python: set[int] = set()
    monkeypatch.setattr(obs, "_is_python", lambda pid: pid in python)
    monkeypatch.setattr(obs, "_start_dump", lambda pid, trigger: None)
    obs._pids, obs._next_ns = [10], 0
    obs.tick(1, [10])
    assert obs.next_tick_ns() is None
    obs.tick(2, [10])  # the same processes: still nothing to ask for
    assert obs.next_tick_ns() is None
    python.add(11)
    obs.tick(3, [10, 11])  # a new process: its early dump is due, then the next round
    assert obs.next_tick_ns() == 3 + EARLY_NS < obs._next_ns


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_bad_dump_interval_is_one_line_error(tmp_path: Path, value: str) -> None:
    cmd = [sys.executable, "-m", "circuit", "run", "-o", str(tmp_path / "r")]
    p = subprocess.run(
        [*cmd, "--dump-interval", value, "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert "--dump-interval" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists()  # refused before anything started
