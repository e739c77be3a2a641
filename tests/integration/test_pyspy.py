"""py-spy beside the sampler: dumps, joins by thread id, on demand, final, failures."""

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
from circuit.analysis.pyspy import join_stacks
from circuit.tracer.pyspy import ENV_PYSPY
from tests.support.helpers import TARGETS

TARGET = TARGETS / "gil_target.py"


def _cmd(out: Path, *opts: str, target: tuple[str, ...]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "circuit",
        "run",
        "-o",
        str(out),
        "--force",
        "--no-fds",
        *opts,
        "--",
        *target,
    ]


def _py(*args: str) -> tuple[str, ...]:
    return (sys.executable, str(TARGET), *args)


def _run(out: Path, *opts: str, target: tuple[str, ...], env: dict | None = None):
    return subprocess.run(
        _cmd(out, *opts, target=target),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.integration
def test_periodic_dumps_are_stored_and_joined_by_thread_id(tmp_path: Path) -> None:
    out = tmp_path / "r"
    p = _run(out, "--dump-interval", "0.3", target=_py("threads", "2", "1.5"))
    assert p.returncode == 0, p.stderr
    run = circuit.load(out)
    meta = run.meta
    assert meta["pyspy"]["dumps"].get("periodic", 0) >= 2
    assert meta["pyspy"]["failures"] == []
    assert (out / "pyspy" / "dumps.jsonl").stat().st_mode & 0o077 == 0
    st = run.stacks
    workers = st[st["thread_name"].isin(["w0", "w1"])]
    assert set(workers["thread_name"]) == {"w0", "w1"}
    assert workers["stack"].str.startswith("spin").mean() > 0.5
    # every worker thread sampled by the kernel gets its Python name and stack
    j = join_stacks(run.threads, st)
    kernel_workers = j[j["tid"] != j["pid"]]
    assert set(kernel_workers["py_name"].dropna()) == {"w0", "w1"}
    named = kernel_workers.groupby("tid")["py_name"].first()
    assert named.notna().all()
    assert kernel_workers["stack"].notna().mean() > 0.5
    # ... and the summary names them
    names = {t["python_name"] for t in run.summary()["threads"]}
    assert {"MainThread", "w0", "w1"} <= names


@pytest.mark.integration
def test_children_are_dumped_each(tmp_path: Path) -> None:
    out = tmp_path / "r"
    p = _run(out, "--dump-interval", "0.4", target=_py("procs", "2", "1.5"))
    assert p.returncode == 0, p.stderr
    st = circuit.load(out).stacks
    assert st["pid"].nunique() == 3, st[["pid", "tid", "stack"]]


@pytest.mark.integration
def test_api_call_and_sigusr1_produce_on_demand_dumps(tmp_path: Path) -> None:
    # the target calls circuit.dump() (SIGUSR1 to circuit), no periodic dumps
    out = tmp_path / "api"
    p = _run(out, "--dump-interval", "0", target=_py("dump", "1", "1.0"))
    assert p.returncode == 0, p.stderr
    run = circuit.load(out)
    assert set(run.stacks["trigger"]) == {"demand"}
    assert run.meta["pyspy"]["dumps"] == {"demand": 1}

    # and a kill -USR1 to circuit from outside
    out2 = tmp_path / "sig"
    proc = subprocess.Popen(
        _cmd(out2, "--dump-interval", "0", target=_py("threads", "1", "2.0")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    pid_file = out2 / "pyspy" / "tracer.pid"
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    st = circuit.load(out2).stacks
    assert "demand" in set(st["trigger"])
    assert st[st["thread_name"] == "w0"]["stack"].str.startswith("spin").any()


@pytest.mark.integration
def test_interrupt_takes_a_final_dump_of_the_hung_program(tmp_path: Path) -> None:
    out = tmp_path / "r"
    proc = subprocess.Popen(
        _cmd(out, "--dump-interval", "0", target=_py("hang", "1", "1")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # aimed at circuit: dump, then forward
    _, err = proc.communicate(timeout=60)
    run = circuit.load(out)
    assert run.meta["stop_reason"] == "interrupted"
    st = run.stacks
    assert set(st["trigger"]) == {"final"}, err
    waiter = st[st["thread_name"] == "waiter"]
    assert waiter["stack"].iloc[0].startswith("blocked"), waiter["stack"].iloc[0]
    main = st[st["thread_name"] == "MainThread"]
    assert "main (gil_target.py" in main["stack"].iloc[0]


@pytest.mark.integration
def test_attach_duration_ends_with_a_final_dump(tmp_path: Path) -> None:
    target = subprocess.Popen([*_py("threads", "1", "4")])
    try:
        time.sleep(0.3)
        out = tmp_path / "r"
        cmd = [sys.executable, "-m", "circuit", "attach", str(target.pid), "-o", str(out)]
        cmd += ["--duration", "1", "--dump-interval", "0", "--no-fds", "-q"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        st = circuit.load(out).stacks
        assert set(st["trigger"]) == {"final"}
        assert "w0" in set(st["thread_name"])
    finally:
        target.kill()
        target.wait()


def _fake(tmp_path: Path, body: str) -> str:
    f = tmp_path / "fake-py-spy"
    f.write_text(f"#!/bin/sh\n{body}\n")
    f.chmod(0o755)
    return str(f)


@pytest.mark.integration
def test_a_hanging_py_spy_is_killed_reported_once_and_the_run_goes_on(tmp_path: Path) -> None:
    fake = _fake(tmp_path, "exec sleep 30")
    out = tmp_path / "r"
    t0 = time.monotonic()
    p = _run(
        out,
        "--dump-interval",
        "0.1",
        "--dump-timeout",
        "0.2",
        target=_py("threads", "1", "1.5"),
        env={ENV_PYSPY: fake},
    )
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 25  # the 30 s fakes were killed, not waited for
    lines = [ln for ln in p.stderr.splitlines() if "py-spy" in ln]
    assert len(lines) == 1 and "did not finish within 0.2 s" in lines[0], p.stderr
    run = circuit.load(out)
    (fail,) = run.meta["pyspy"]["failures"]
    assert fail["kind"] == "timeout" and fail["count"] >= 2
    assert any("did not finish" in w for w in run.meta["warnings"])
    # kernel sampling went on to the end, past the hung dumps
    workers = run.threads[run.threads["tid"] != run.threads["pid"]]
    assert workers["t_ns"].nunique() > 20
    # the first dump starts 0.1 s in and is killed 0.2 s later; the worker,
    # spinning for 1.5 s, was sampled well after that
    assert workers["t_ns"].max() - run.meta["start_ns"] > 0.6e9
    assert run.stacks.empty
    # no fake py-spy left behind
    ps = subprocess.run(["pgrep", "-f", fake], capture_output=True, text=True)
    assert ps.stdout.strip() == ""


@pytest.mark.integration
def test_py_spy_without_permission_is_reported_once(tmp_path: Path) -> None:
    fake = _fake(tmp_path, 'echo "Error: Permission Denied (os error 13)" >&2; exit 1')
    out = tmp_path / "r"
    p = _run(
        out, "--dump-interval", "0.2", target=_py("threads", "1", "1.2"), env={ENV_PYSPY: fake}
    )
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "py-spy" in ln]
    assert len(lines) == 1 and "CAP_SYS_PTRACE" in lines[0], p.stderr
    meta = circuit.load(out).meta
    (fail,) = meta["pyspy"]["failures"]
    assert fail["kind"] == "permission" and fail["count"] >= 3


@pytest.mark.integration
def test_missing_py_spy_and_non_python_targets(tmp_path: Path) -> None:
    out = tmp_path / "missing"
    p = _run(out, target=_py("threads", "1", "0.5"), env={ENV_PYSPY: str(tmp_path / "none")})
    assert p.returncode == 0, p.stderr
    assert "py-spy not found" in p.stderr and "pip install py-spy" in p.stderr
    assert circuit.load(out).meta["pyspy"]["failures"][0]["kind"] == "missing"

    # a program that is not Python is skipped silently
    out2 = tmp_path / "sleep"
    p = _run(out2, "--dump-interval", "0.2", target=("sleep", "0.8"))
    assert p.returncode == 0, p.stderr
    assert "py-spy" not in p.stderr
    run = circuit.load(out2)
    assert run.meta["pyspy"]["failures"] == []
    assert run.stacks.empty


@pytest.mark.integration
def test_profile_writes_a_flame_graph_and_a_speedscope_file(tmp_path: Path) -> None:
    out = tmp_path / "r"
    p = _run(out, "--profile", "--gil", target=_py("threads", "2", "1.5"))
    assert p.returncode == 0, p.stderr
    svg = out / "pyspy" / "profile.svg"
    speed = out / "pyspy" / "profile.speedscope.json"
    assert svg.read_text().lstrip().startswith("<?xml") and "spin" in svg.read_text()
    doc = json.loads(speed.read_text())
    assert "speedscope" in doc["$schema"]
    names = {f["name"] for f in doc["shared"]["frames"]}
    assert "spin" in names
    assert circuit.load(out).meta["pyspy"]["profiles"] == [
        "pyspy/profile.svg",
        "pyspy/profile.speedscope.json",
    ]


@pytest.mark.integration
def test_bench_runs_dump_on_request(tmp_path: Path) -> None:
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "circuit", "bench", "--workloads", "cpu-count"]
    cmd += ["--models", "threads", "--tasks", "2", "--repeat", "1", "--scale", "0.3"]
    cmd += ["--dump-interval", "0.3", "-q", "-o", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    (run_dir,) = (out / "runs").iterdir()
    run = circuit.load(run_dir)
    assert run.meta["pyspy"]["dumps"].get("periodic", 0) >= 1
    assert not run.stacks.empty


@pytest.mark.integration
def test_periodic_dumps_keep_their_interval_while_the_c_loop_samples(tmp_path: Path) -> None:
    # An idle target stays in the C loop between flushes: the loop must wake
    # Python for each dump due (Observer.next_tick_ns), not once a second.
    out = tmp_path / "r"
    p = _run(
        out,
        "--dump-interval",
        "0.2",
        target=(sys.executable, "-c", "import time; time.sleep(2)"),
    )
    assert p.returncode == 0, p.stderr
    info = circuit.load(out).meta["pyspy"]
    # ~9 rounds (0.2 s in, then every 0.2 s); ~2 if only the flushes woke
    # it.  A round finding the process busy with an early or long-wait dump
    # skips it: those count as that round's dump.
    assert sum(info["dumps"].values()) >= 6, info


@pytest.mark.integration
def test_default_interval_is_auto_and_measures_what_dumps_cost(tmp_path: Path) -> None:
    out = tmp_path / "r"
    p = _run(out, target=_py("threads", "1", "4.0"))
    assert p.returncode == 0, p.stderr
    info = circuit.load(out).meta["pyspy"]
    assert info["interval_s"] == "auto"
    periodic = info["dumps"].get("periodic", 0)
    # One Python process: the first once the 0.5% budget has paid for it
    # (~2.4 s in), then every ~2 s (10-15 ms of py-spy CPU per dump), never
    # more than once a second.
    assert 1 <= periodic <= 2, info
    assert 0.0005 < info["dump_cpu_s"] / periodic < 0.5, info
