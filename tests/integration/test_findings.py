"""Findings on real programs like the five of issue #17, and on two that do
nothing wrong.

Each program is traced with `circuit run --dump-interval 0.3` (stacks
every 0.3 s, the first at 0.5 s) for 2-3 s, as a user would. The oracle is
the program itself: what it does wrong is written in it (a server that
answers after 0.2 s, a lock held 50 ms by four threads, 80 files and 60
sockets kept open, 4 CPU-bound processes on a 2-CPU machine), and the
culprit function's name is the one in its source. The socket peer is the
server's own port (its getsockname, printed by it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import circuit
from tests.support.helpers import PY, TARGETS, cli

pytestmark = pytest.mark.integration

T = TARGETS / "findings"
ABOVE_INFO = ("critical", "warning")


@pytest.fixture(scope="module")
def server():
    """The slow server: every request answered after 0.2 s (untraced)."""
    p = subprocess.Popen([PY, str(T / "slow_server.py"), "0.2"], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    port = int(p.stdout.readline())
    assert p.stdout.readline().strip() == "ready"
    yield port
    p.kill()
    p.wait(timeout=10)


def _findings(tmp_path: Path, *argv: str) -> list[dict]:
    out = tmp_path / "run"
    r = cli("run", "-q", "--dump-interval", "0.3", "-o", str(out), "--", *argv, timeout=120)
    assert r.returncode == 0, r.stderr
    return circuit.load(out).summary()["findings"]


def _culprit(findings: list[dict], kind: str, func: str) -> dict:
    """The finding of ``kind`` ranked first or second, with ``func`` in its stack."""
    top = findings[:2]
    hits = [f for f in top if f["kind"] == kind]
    assert hits, f"no {kind} in the first two: {[f['title'] for f in findings]}"
    f = hits[0]
    assert f["severity"] in ABOVE_INFO, f
    assert any(line.startswith(func + " ") for line in f["stack"]), f["stack"]
    return f


def test_crawler_waits_on_the_slow_server(tmp_path, server):
    """40 pages, 4 threads, 0.2 s each: every worker waits on the server's
    socket ~0.2 s per request (socket timeouts: in poll, resolved to the
    peer the process's connections have)."""
    fs = _findings(tmp_path, PY, str(T / "crawler.py"), str(server), "40", "4")
    f = _culprit(fs, "slow-io", "fetch_page")
    assert f["resources"][0]["what"] == f"127.0.0.1:{server}"
    assert f["evidence"]["threads_waiting"] >= 2
    # each wait is one 0.2 s answer: a single wait well above would be two merged
    assert 0.1 <= f["evidence"]["mean_s"] <= 0.35
    assert f["thread_name"].startswith("crawler")


def test_blocking_socket_call_in_a_coroutine(tmp_path, server):
    """load_config() does a blocking GET in the loop's thread: the loop is
    blocked (first, naming load_config), and each wait is slow I/O on the
    server's port, also naming load_config."""
    fs = _findings(tmp_path, PY, str(T / "service.py"), "socket", str(server), "6")
    f = _culprit(fs, "loop-blocked", "load_config")
    assert f["thread_name"] == "MainThread"
    (io,) = [f for f in fs if f["kind"] == "slow-io" and f["severity"] in ABOVE_INFO]
    assert any(line.startswith("load_config ") for line in io["stack"]), io["stack"]
    assert io["resources"][0]["what"] == f"127.0.0.1:{server}"
    assert io["evidence"]["waits"] >= 4, io  # 6 GETs of 0.2 s; a wait cut short is missed


def test_blocking_sleep_in_a_coroutine_is_not_an_io_finding(tmp_path, server):
    """load_config() calls time.sleep(0.3) in the loop: no I/O wait, no
    lock, so none of the I/O, lock or GIL kinds applies; the loop is blocked,
    and loop-blocked says so first, naming load_config."""
    fs = _findings(tmp_path, PY, str(T / "service.py"), "sleep", str(server), "6")
    f = _culprit(fs, "loop-blocked", "load_config")
    assert f["duration_s"] == pytest.approx(0.3, abs=0.1), f
    assert not [f for f in fs if f["kind"] != "loop-blocked" and f["severity"] in ABOVE_INFO], fs


def test_process_pool_larger_than_the_cpus(tmp_path):
    """2 x CPUs processes of pure-Python work: demand ~2 x CPUs, queued."""
    n = 2 * (os.cpu_count() or 1)
    fs = _findings(tmp_path, PY, str(T / "procpool.py"), str(n), str(2 * n), "8000000")
    f = _culprit(fs, "cpu-oversubscribed", "crunch")
    assert f["evidence"]["demand_cores"] > f["evidence"]["cpus"] + 0.5
    assert f["evidence"]["processes_waiting"] >= 2


def test_threads_fighting_over_a_lock(tmp_path):
    """4 threads take one Lock in turn and hold it 50 ms: 3 wait at a time."""
    fs = _findings(tmp_path, PY, str(T / "lock_fight.py"), "4", "2.5")
    f = _culprit(fs, "lock-contention", "hold_lock")
    assert f["evidence"]["threads_waiting"] >= 3
    assert f["thread_name"].startswith("worker-")
    # ~3/4 of each thread's time: anything from half up is contention
    assert f["evidence"]["share"] >= 0.5


def test_leaking_files_and_sockets(tmp_path, server):
    """80 files then 60 sockets to the server, kept until exit."""
    fs = _findings(tmp_path, PY, str(T / "leak.py"), str(server), "80", "60")
    leaks = {f["resources"][0]["kind"]: f for f in fs[:2] if f["kind"] == "fd-leak"}
    assert set(leaks) == {"file", "socket"}, [f["title"] for f in fs]
    sock, files = leaks["socket"], leaks["file"]
    assert sock["resources"][0] == {"kind": "socket", "what": f"127.0.0.1:{server}", "count": 60}
    # a scan can miss an fd opened and closed between two scans, never one kept open
    assert files["evidence"]["never_closed"] == 80
    for f, func in ((sock, "leak_sockets"), (files, "leak_files")):
        if f["stack"]:  # a dump came while it ran (every 0.3 s: nearly always)
            assert any(line.startswith(func + " ") for line in f["stack"]), f["stack"]
    assert files["stack"] or sock["stack"]


def test_programs_that_do_nothing_wrong(tmp_path):
    """io-sleep under asyncio and a pool of as many processes as CPUs: no
    finding above info (a loaded machine may queue them: that is info)."""
    n = os.cpu_count() or 1
    fs = _findings(
        tmp_path, PY, "-m", "circuit.workloads", "io-sleep", "--model", "asyncio", "-n", "8"
    )
    assert not [f for f in fs if f["severity"] in ABOVE_INFO], fs
    fs = _findings(tmp_path / "pool", PY, str(T / "procpool.py"), str(n), str(2 * n), "2000000")
    assert not [f for f in fs if f["severity"] in ABOVE_INFO], fs


def test_threads_running_python_contend_for_the_gil(tmp_path):
    """Four threads spinning in pure Python (tests/targets/gil_target.py
    `spin`) on 2 cores: only one runs Python at a time, so each waits for the
    GIL most of its time. The finding is first, names `spin`, and its numbers
    are the GIL model's own (the summary's `gil` entry for that process)."""
    out = tmp_path / "run"
    r = cli("run", "-q", "--dump-interval", "0.3", "-o", str(out), "--",
            PY, str(TARGETS / "gil_target.py"), "threads", "4", "2", timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = circuit.load(out).summary()
    f = _culprit(s["findings"], "gil-contention", "spin")
    (p,) = [p for p in s["gil"]["processes"] if p["pid"] == f["pid"]]
    assert p["contention"] > 0.3, p
    assert f["evidence"]["contention"] == pytest.approx(p["contention"], abs=1e-3), (f, p)
