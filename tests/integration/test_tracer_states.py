"""What the tracer sees on live targets: states, wait reasons, fds, children."""

from __future__ import annotations

import os

import pytest

import circuit
from tests.support.helpers import PY, cli, code, share, thread_summary, trace

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, params=["c-tick", "python-tick"])
def tick(request, monkeypatch):
    """Every figure here holds with the C steady-state tick and without it."""
    if request.param == "python-tick":
        monkeypatch.setenv("CIRCUIT_PYTHON_TICK", "1")
    else:
        monkeypatch.delenv("CIRCUIT_PYTHON_TICK", raising=False)


# Names threads at the OS level (Python 3.11 does not), so tests can find them.
NAME = """
import ctypes
_libc = ctypes.CDLL(None)
def osname(n):
    _libc.prctl(15, n.encode(), 0, 0, 0)
"""


def test_sleeping_thread_is_sleep(tmp_path):
    status, run = trace(
        tmp_path,
        NAME
        + """
import threading, time
def f():
    osname("sleeper")
    time.sleep(1.0)
t = threading.Thread(target=f); t.start(); t.join()
""",
    )
    assert status == 0
    (t,) = thread_summary(run, name="sleeper")
    assert share(t, "sleep") > 0.8
    assert t["cpu_s"] < 0.05
    # the main thread waits in join(): a futex
    main = next(x for x in run.summary()["threads"] if x["tid"] == x["pid"])
    assert share(main, "lock") > 0.6


def test_busy_thread_is_running(tmp_path):
    _, run = trace(
        tmp_path,
        NAME
        + """
import threading, time
def f():
    osname("busy")
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        pass
t = threading.Thread(target=f); t.start(); t.join()
""",
    )
    (t,) = thread_summary(run, name="busy")
    # State R is on a CPU or waiting for one: on a shared machine the split
    # varies, but CPU time and run-queue delay must account for it.
    assert share(t, "running") + share(t, "runnable") > 0.8
    r = t["time_by_state"].get("R", 0)
    assert r > 0.7
    assert t["cpu_s"] > 0.2
    assert abs(r - (t["cpu_s"] + t["run_delay_s"])) < 0.25
    # runnable is the run delay itself (both from schedstat, over one span)
    assert t["time_by_wait"]["runnable"] == pytest.approx(t["run_delay_s"], abs=0.02)
    assert t["time_by_wait"]["running"] == pytest.approx(t["cpu_s"], abs=0.05)


def test_pipe_reader_is_pipe(tmp_path):
    _, run = trace(
        tmp_path,
        NAME
        + """
import os, threading, time
r, w = os.pipe()
def f():
    osname("reader")
    os.read(r, 1)
t = threading.Thread(target=f); t.start()
time.sleep(1.0)
os.write(w, b"x"); t.join()
""",
    )
    (t,) = thread_summary(run, name="reader")
    assert share(t, "pipe") > 0.7


def test_idle_asyncio_loop_waits_in_poll(tmp_path):
    _, run = trace(tmp_path, "import asyncio\nasyncio.run(asyncio.sleep(1.0))\n")
    s = run.summary()
    main = next(x for x in s["threads"] if x["tid"] == x["pid"])
    assert share(main, "poll") > 0.7, {k: v for k, v in main["time_by_wait"].items() if v}
    (p,) = s["processes"]
    assert p["fds_peak_by_kind"]["epoll"] == 1


def test_fd_kinds_counted_exactly_in_child(tmp_path):
    # The parent starts a child; the child opens 3 sockets, 2 pipes (4 fds) and
    # one epoll, then waits: its own row must show exactly those.
    child = """
import os, select, socket, time
devnull = os.open("/dev/null", os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(devnull, fd)
os.close(devnull)
socks = [socket.socket() for _ in range(3)]
pipes = [os.pipe() for _ in range(2)]
ep = select.epoll()
time.sleep(1.0)
"""
    _, run = trace(
        tmp_path,
        f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}])\n",
    )
    s = run.summary()
    assert len(s["processes"]) == 2
    kid = next(p for p in s["processes"] if p["ppid"] == run.meta["root_pid"])
    k = kid["fds_peak_by_kind"]
    assert (k["socket"], k["pipe"], k["epoll"]) == (3, 4, 1)
    assert k["device"] == 3  # 0, 1, 2 on /dev/null
    opened = run.fds[(run.fds.pid == kid["pid"]) & (run.fds.event == "open")]
    assert (opened.kind == "socket").sum() == 3
    assert opened[opened.kind == "epoll"].target.tolist() == ["anon_inode:[eventpoll]"]


def test_multiprocessing_pool_of_two(tmp_path):
    status, run = trace(
        tmp_path,
        """
import multiprocessing as mp
def work(n):
    x = 0
    for i in range(n):
        x += i
    return x
if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(work, [3_000_000] * 4)
""",
    )
    assert status == 0
    s = run.summary()
    assert len(s["processes"]) == 3
    root = run.meta["root_pid"]
    workers = [p for p in s["processes"] if p["pid"] != root]
    assert all(p["ppid"] == root for p in workers)
    assert all(p["cpu_s"] > 0.05 for p in workers)
    root_cpu = next(p["cpu_s"] for p in s["processes"] if p["pid"] == root)
    assert sum(p["cpu_s"] for p in workers) > root_cpu


def test_short_lived_children_are_recorded(tmp_path):
    _, run = trace(
        tmp_path,
        """
import subprocess, sys
for _ in range(3):
    subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)"])
""",
    )
    assert run.procs.pid.nunique() == 4
    kids = run.processes[run.processes.pid != run.meta["root_pid"]]
    assert kids.pid.nunique() == 3


@pytest.mark.parametrize("fds", [True, False])
def test_exec_records_new_command_line(tmp_path, fds):
    # Without fd scans (--no-fds) the fd count still says when to look.
    _, run = trace(
        tmp_path,
        """
import os, sys, time
time.sleep(0.3)
os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(0.3)", "after-exec"])
""",
        fds=fds,
    )
    rows = run.procs[run.procs.pid == run.meta["root_pid"]]
    assert len(rows) == 2
    assert "after-exec" in rows.cmdline.iloc[-1]


ORPHAN = """
import subprocess, sys, time
# sh starts the spinner in the background and exits at once: the spinner is
# orphaned before any sample can see it as sh's child.
spin = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.5: pass"
subprocess.run(["sh", "-c", f"exec {sys.executable} -c '{spin}' orphan-marker &"])
time.sleep(1.2)
"""


def test_orphans_of_the_traced_tree_are_adopted_traced_and_reaped(tmp_path):
    import ctypes

    from circuit.tracer.prctl import PR_SET_CHILD_SUBREAPER

    _, run = trace(tmp_path, ORPHAN)
    procs = run.procs[run.procs.cmdline.str.endswith("orphan-marker")]
    assert len(procs) == 1, run.procs
    pid = int(procs.pid.iloc[0])
    assert int(procs.ppid.iloc[0]) == os.getpid()  # reparented to circuit (this process)
    cpu = run.summary()["processes"]
    assert next(p["cpu_s"] for p in cpu if p["pid"] == pid) > 0.3
    assert not os.path.exists(f"/proc/{pid}")  # exited, and reaped by circuit
    got = ctypes.c_int(-1)
    libc = ctypes.CDLL(None)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER + 1, ctypes.byref(got), 0, 0, 0) == 0
    assert got.value == 0  # no longer a subreaper once the run is over


def test_circuits_own_children_are_not_adopted(tmp_path):
    # py-spy dumps are circuit's children too: never traced as orphans.
    out = tmp_path / "r"
    p = cli("run", "-q", "-o", str(out), "--dump-interval", "0.1", "--", PY, "-c", code(ORPHAN))
    assert p.returncode == 0, p.stderr
    run = circuit.load(out)
    assert run.meta["pyspy"]["dumps"].get("periodic", 0) >= 3
    assert not run.procs.cmdline.str.contains("py-spy").any(), run.procs.cmdline
    assert run.procs.cmdline.str.endswith("orphan-marker").sum() == 1


def test_socket_addresses_are_recorded(tmp_path):
    _, run = trace(
        tmp_path,
        """
import socket, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()
print(srv.getsockname()[1], flush=True)
time.sleep(0.5)
""",
    )
    socks = run.fds[(run.fds.kind == "socket") & run.fds.event.isin(["open", "addr"])]
    # the listening socket may be seen before bind(): its address then comes as "addr"
    assert (socks.proto == "tcp LISTEN").sum() == 1
    est = socks[socks.proto == "tcp ESTABLISHED"]
    assert len(est) == 2
    assert all(x.startswith("127.0.0.1:") for x in est.local)
    assert set(est.local) == set(est.remote)


def test_high_rate(tmp_path):
    _, run = trace(tmp_path, "import time\ntime.sleep(1.0)\n", rate=1000)
    # Honest tolerance for a shared 2-core machine: far above the 100 Hz default.
    assert run.meta["rate_hz_achieved"] > 300
    assert run.meta["sampler_cpu_s"] >= 0
    assert run.summary()["samples"] == run.meta["samples"]


def test_a_thread_waking_thousands_of_times_a_second_is_never_other(tmp_path):
    """A thread read asleep in its stat and awake by its syscall file (it
    woke between the two reads: the file says "running") is awake, not in
    some unknown wait. Napping 50 µs at a time it wakes ~10,000 times a
    second, so at 1 kHz each run crosses that window many times; every
    sample of it must be running, runnable or its sleep."""
    _, run = trace(
        tmp_path,
        NAME
        + """
import threading, time
def f():
    osname("napper")
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        time.sleep(0.00005)
t = threading.Thread(target=f); t.start(); t.join()
""",
        rate=1000,
    )
    th = run.threads[run.threads["name"].astype(str) == "napper"]
    assert len(th) > 300, run.meta["rate_hz_achieved"]
    waits = th["wait"].astype(str).value_counts().to_dict()
    assert set(waits) <= {"running", "runnable", "sleep"}, waits
    assert waits.get("sleep", 0) > 0, waits


def test_psutil_backend_run(tmp_path):
    _, run = trace(
        tmp_path,
        NAME
        + """
import threading, time
def f():
    osname("sleeper")
    time.sleep(0.8)
t = threading.Thread(target=f); t.start(); t.join()
""",
        backend="psutil",
    )
    assert run.meta["backend"] == "psutil"
    (t,) = thread_summary(run, name="sleeper")
    assert t["time_by_state"].get("S", 0) > 0.5


# time.sleep is pselect6(0, NULL, NULL, NULL, t) in 3.10 and clock_nanosleep
# from 3.11; select.select on a pipe is pselect6 on one fd in every version.
PYENV = "/root/.pyenv/versions"
OTHER_PYTHONS = [
    f"{PYENV}/3.10.13/bin/python3.10",
    f"{PYENV}/3.12.1/bin/python3.12",
    f"{PYENV}/3.13.0/bin/python3.13",
]

SELECT_THEN_SLEEP = (
    NAME
    + """
import os, select, threading, time
r, w = os.pipe()
def f():
    osname("waiter")
    for _ in range(30):
        select.select([r], [], [], 0.03)  # nothing to read: waits on one fd
        time.sleep(0.03)
t = threading.Thread(target=f); t.start(); t.join()
"""
)


@pytest.mark.parametrize("python", OTHER_PYTHONS, ids=lambda p: os.path.basename(p))
def test_time_sleep_is_sleep_and_select_on_a_fd_is_poll(tmp_path, python):
    """The same syscall (pselect6 in 3.10) on no fds is a sleep, on a fd a poll.
    Turns of 30 ms keep the thread waking every few samples, so the C tick (the
    autouse fixture runs both ticks) reuses its rows asleep, which it may only
    do on the same syscall *and* first argument."""
    from circuit.tracer.session import Options, run_command

    if not os.access(python, os.X_OK):
        pytest.skip(f"{python} is not installed")
    status, _ = run_command(
        [python, "-c", code(SELECT_THEN_SLEEP)], Options(out=tmp_path / "r", quiet=True)
    )
    assert status == 0
    (t,) = thread_summary(circuit.load(tmp_path / "r"), name="waiter")
    # 0.9 s in each; a 100 Hz sample is 0.01 s, late wake-ups add to each.
    assert 0.7 < t["time_by_wait"].get("sleep", 0) < 1.2, t["time_by_wait"]
    assert 0.7 < t["time_by_wait"].get("poll", 0) < 1.2, t["time_by_wait"]
