"""Dumps taken early, inside long waits and at exit, on real threads (real py-spy).

Oracle: the target times each of its blocking calls itself
(time.monotonic_ns() before and after, CLOCK_MONOTONIC: the clock of the
samples and of the dumps' t_ns / end_ns) and writes its threads' names and
native ids; circuit never sees that file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import circuit
from tests.support.helpers import TARGETS, interpreter

TARGET = TARGETS / "waits_target.py"
BLOCKERS = {"sleep": "blocked_sleep", "socket": "blocked_recv", "lock": "blocked_lock"}


def _trace(tmp_path: Path, python: str, *opts: str, wait_s: float = 0.2):
    out, log = tmp_path / "r", tmp_path / "waits.json"
    cmd = [sys.executable, "-m", "circuit", "run", "-q", "-o", str(out), "--no-fds", *opts]
    p = subprocess.run(
        [*cmd, "--", python, str(TARGET), str(log), str(wait_s)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return circuit.load(out), json.loads(log.read_text())


@pytest.mark.integration
@pytest.mark.parametrize("minor", [None, 10, 13])
def test_short_run_has_every_thread_named_and_a_stack_inside_each_long_wait(
    tmp_path: Path, minor: int | None
) -> None:
    """A ~1.4 s run with three named workers, each blocked 0.2 s once (sleep,
    socket recv, lock): every worker has its Python name and a stack, and
    each wait has a dump whose whole [t_ns, end_ns] lies inside the wait and
    shows the blocking function.  No tolerance: py-spy reads the process
    between t_ns (started) and end_ns (its result written), so a dump inside
    the wait read the thread in it."""
    python = sys.executable if minor is None else interpreter(minor)
    run, waits = _trace(tmp_path, python)
    st = run.stacks
    assert len(waits) == 3
    for w in waits:
        mine = st[st["tid"] == w["tid"]]
        assert set(mine["thread_name"]) == {w["name"]}, (w, st[["tid", "thread_name"]])
        inside = mine[(mine["t_ns"] >= w["t0"]) & (mine["end_ns"] <= w["t1"])]
        assert len(inside), (w, st[["t_ns", "end_ns", "trigger", "tid"]].to_string())
        assert inside["stack"].str.contains(BLOCKERS[w["kind"]]).all(), inside["stack"].tolist()
    triggers = set(st["trigger"])
    assert "early" in triggers, triggers
    assert triggers <= {"early", "long-wait", "exit", "periodic"}, triggers
    root = run.meta["root_pid"]
    first = st[st["pid"] == root]["t_ns"].min()
    assert first - run.meta["start_ns"] <= 0.3e9  # the first dump, 0.3 s in at most


@pytest.mark.integration
def test_no_automatic_dumps_with_interval_zero(tmp_path: Path) -> None:
    """--dump-interval 0: none of early, long-wait, exit (only on demand / final)."""
    run, _ = _trace(tmp_path, sys.executable, "--dump-interval", "0")
    assert run.stacks.empty
    assert run.meta["pyspy"]["dumps"] == {}
