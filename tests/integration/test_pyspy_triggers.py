"""Dumps taken early, inside long waits and at exit, on real threads (real py-spy).

Oracle: the target times each of its blocking calls itself
(time.monotonic_ns() before and after, CLOCK_MONOTONIC: the clock of the
samples and of the dumps' t_ns / end_ns) and writes its threads' names and
native ids; circuit never sees that file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


SPIN = """
import os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
def spin_here():
    end = time.monotonic() + 1.0
    n = 0
    while time.monotonic() < end:
        n += 1
spin_here()
"""


def _wrapped(tmp_path: Path, how: str) -> list[str]:
    script = tmp_path / "spin.py"
    script.write_text(SPIN)
    pid_file = tmp_path / "pid"
    if how == "exec":
        return ["sh", "-c", f'exec "{sys.executable}" "{script}" "{pid_file}"']
    if how == "child":
        return ["sh", "-c", f'"{sys.executable}" "{script}" "{pid_file}"; true']
    shim = Path("~/.pyenv/shims/python3").expanduser()
    if not shim.exists():
        pytest.skip("no pyenv shim on this machine")
    return [str(shim), str(script), str(pid_file)]


@pytest.mark.integration
@pytest.mark.parametrize("how", ["exec", "child", "pyenv"])
def test_profile_follows_a_wrapper_to_its_python_process(tmp_path: Path, how: str) -> None:
    """--profile behind `sh -c 'exec python …'`, `sh -c 'python …; true'` and a
    pyenv shim (a bash script that execs python later): the flame graph and
    the speedscope file are of the Python process (the PID the script wrote itself), name the target's function, and
    are listed in meta.json's ``profiles``."""
    out = tmp_path / "r"
    env = None
    if how == "pyenv":
        env = {**os.environ, "PYENV_VERSION": Path(sys.base_prefix).name}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "circuit",
            "run",
            "-o",
            str(out),
            "--no-fds",
            "--profile",
            "--",
            *_wrapped(tmp_path, how),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    assert "not a Python process" not in p.stderr and "no Python process" not in p.stderr
    run = circuit.load(out)
    (prof,) = run.meta["profiles"]
    assert prof["pid"] == int((tmp_path / "pid").read_text()), prof
    if how == "child":
        assert prof["pid"] != run.meta["root_pid"]
    for key in ("flamegraph", "speedscope"):
        text = (out / prof[key]).read_text()
        assert "spin_here" in text, key


@pytest.mark.integration
def test_gil_without_profile_warns(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "circuit", "run", "-o", str(tmp_path / "r"), "--gil", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "--gil" in ln]
    assert len(lines) == 1 and "without --profile" in lines[0], p.stderr


@pytest.mark.integration
def test_sigusr1_says_where_the_dump_went(tmp_path: Path) -> None:
    """SIGUSR1 to circuit prints the path of the dumps file, and that file
    holds the demand dump."""
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "circuit", "run", "-o", str(out), "--no-fds"]
    proc = subprocess.Popen(
        [*cmd, "--dump-interval", "0", "--", sys.executable, "-c", "import time; time.sleep(3)"],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.8)  # the interpreter is up
    os.kill(proc.pid, signal.SIGUSR1)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    assert proc.wait(60) == 0, rest
    dumps = out / "pyspy" / "dumps.jsonl"
    said = [ln for ln in rest.splitlines() if "py-spy dump of PID" in ln]
    assert len(said) == 1 and str(dumps) in said[0], rest
    assert [json.loads(ln)["trigger"] for ln in dumps.read_text().splitlines()] == ["demand"]


@pytest.mark.integration
def test_an_exit_by_signal_is_named(tmp_path: Path) -> None:
    """A target killed by SIGSEGV: circuit's last line says SIGSEGV, meta and
    `summary --json` keep the number and add the name."""
    out = tmp_path / "r"
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    p = subprocess.run(
        [sys.executable, "-m", "circuit", "run", "-o", str(out), "--", sys.executable, "-c", crash],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 128 + signal.SIGSEGV, p.stderr
    assert "killed by SIGSEGV" in p.stderr and "-11" not in p.stderr, p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["exit_code"] == -11 and meta["exit_signal_name"] == "SIGSEGV"
    s = subprocess.run(
        [sys.executable, "-m", "circuit", "summary", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    summary = json.loads(s.stdout)
    assert summary["exit_code"] == -11 and summary["exit_signal"] == "SIGSEGV"
    text = subprocess.run(
        [sys.executable, "-m", "circuit", "summary", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "killed by SIGSEGV" in text, text
