"""The /proc backend's shortcuts for processes and threads that did not run.

A process none of whose threads ran since the last sample is not re-read:
its previous rows (the very same list) are returned.  The check is one
batched ``schedstat`` read per thread, or, for big processes when we may
(root), one taskstats request.  These tests wake a known thread of a live
target and check that exactly that is seen, with each way of checking.
"""

from __future__ import annotations

import contextlib
import subprocess
import time

import pytest

from circuit.tracer.backends import ProcBackend, proctree
from circuit.tracer.backends import proc as procbackend
from circuit.tracer.taskstats import TaskStats
from tests.support.helpers import Spawned, wait_for

pytestmark = pytest.mark.integration

# 12 threads, each blocked on its own Event; a line "k" on stdin makes thread
# k spin for 30 ms of CPU time, say "done", and block again.  Prints the
# threads' native ids.
TARGET = """
import sys, threading, time
evs = [threading.Event() for _ in range(12)]
ids = [None] * 12
def work(k):
    ids[k] = threading.get_native_id()
    while True:
        evs[k].wait()
        evs[k].clear()
        end = time.thread_time() + 0.03
        while time.thread_time() < end:
            pass
        print("done", flush=True)
ts = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(12)]
[t.start() for t in ts]
while None in ids:
    time.sleep(0.01)
print(" ".join(map(str, ids)), flush=True)
print("ready", flush=True)
for line in sys.stdin:
    evs[int(line)].set()
"""

HAS_TASKSTATS = TaskStats.open() is not None
GATES = [
    pytest.param(False, id="schedstat"),
    pytest.param(
        True,
        id="taskstats",
        marks=pytest.mark.skipif(not HAS_TASKSTATS, reason="taskstats needs root"),
    ),
]


class Target(Spawned):
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [__import__("sys").executable, "-c", TARGET],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.tids = [int(t) for t in self.proc.stdout.readline().split()]
        assert self.proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # the main thread into its read()

    def wake(self, k: int) -> None:
        """Thread k spins for 30 ms of CPU; back when it is blocked again
        (however long a busy machine makes that take)."""
        self.proc.stdin.write(f"{k}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done"
        assert wait_for(lambda: _state(self.pid, self.tids[k]) == "S", interval=0.005)


@contextlib.contextmanager
def _opened(b: ProcBackend, pid: int):
    """The backend's handle on a live process, closed after."""
    h = b.open(pid)
    try:
        yield h
    finally:
        b.close(h)


def _sampler(taskstats: bool) -> ProcBackend:
    b = ProcBackend(taskstats=taskstats)
    assert (b._taskstats is not None) == taskstats
    return b


@pytest.mark.parametrize("taskstats", GATES)
def test_an_idle_process_returns_the_same_rows(taskstats):
    b = _sampler(taskstats)
    with Target() as t, _opened(b, t.pid) as h:
        prow1, rows1, _ = b.sample(h, {}, time.monotonic_ns())
        _, rows2, ran = b.sample(h, {}, time.monotonic_ns())
        time.sleep(0.05)
        prow3, rows3, ran3 = b.sample(h, {}, time.monotonic_ns())
    assert len(rows1) == 13
    assert not ran and not ran3
    assert rows3 is rows1 and rows2 is rows1 and prow3 is prow1
    assert {r[3] for r in rows1} == {"S"}


@pytest.mark.parametrize("taskstats", GATES)
def test_the_thread_that_ran_is_seen_and_only_it(taskstats):
    b = _sampler(taskstats)
    with Target() as t, _opened(b, t.pid) as h:
        _, before, _ = b.sample(h, {}, time.monotonic_ns())
        b.sample(h, {}, time.monotonic_ns())
        t.wake(5)
        _, after, ran = b.sample(h, {}, time.monotonic_ns())
    assert ran and after is not before
    old = {r[1]: r for r in before}
    new = {r[1]: r for r in after}
    woken, main = t.tids[5], t.pid
    cpu = 10
    assert new[woken][cpu] - old[woken][cpu] >= 20_000_000  # spun 30 ms
    assert new[woken][12] > old[woken][12]  # a voluntary switch: it blocked again
    # Nobody else was on a CPU but the main thread (it read the line): their
    # rows are the very same objects.
    changed = {tid for tid in new if new[tid] is not old[tid]}
    assert changed == {woken, main}


def _counting_process_reads(b: ProcBackend, monkeypatch) -> list[int]:
    """The times the process's own files were read (ProcBackend._read_process)."""
    reads: list[int] = []
    real = b._read_process

    def counting(p, t_ns):
        reads.append(t_ns)
        return real(p, t_ns)

    monkeypatch.setattr(b, "_read_process", counting)
    return reads


def test_idle_processes_are_still_reread_now_and_then(monkeypatch):
    b = ProcBackend(taskstats=False)
    reads = _counting_process_reads(b, monkeypatch)
    with Target() as t, _opened(b, t.pid) as h:
        rows0 = b.sample(h, {}, time.monotonic_ns())[1]
        for _ in range(2 * procbackend.IDLE_REFRESH + 2):
            prow, rows, ran = b.sample(h, {}, time.monotonic_ns())
    assert not ran and rows is rows0
    # The first sample, then one per IDLE_REFRESH idle ones (for the parent
    # pid and RSS, which can change without the process running).
    assert len(reads) == 3
    assert prow[1] > 0 and prow[3] > 0


def test_taskstats_fingerprint_moves_only_when_a_thread_runs():
    ts = TaskStats.open()
    if ts is None:
        pytest.skip("taskstats needs root (CAP_NET_ADMIN) and CONFIG_TASKSTATS")
    try:
        with Target() as t:
            a = ts.tgid(t.pid)
            time.sleep(0.05)
            b = ts.tgid(t.pid)
            t.wake(0)
            c = ts.tgid(t.pid)
        assert a is not None and a == b
        assert c is not None and c[0] > b[0] and c[1] - b[1] >= 20_000_000
        dead = subprocess.Popen(["true"])
        dead.wait()
        assert ts.tgid(dead.pid) is None
    finally:
        ts.close()


CHILD_WITH_THREADS = """
import subprocess, sys, time
time.sleep(0.3)  # sampled for a while first: the child is found by probing new pids
code = (
    "import threading, time\\n"
    "ts = [threading.Thread(target=time.sleep, args=(0.5,)) for _ in range(6)]\\n"
    "[t.start() for t in ts]\\n"
    "[t.join() for t in ts]\\n"
)
subprocess.run([sys.executable, "-c", code], check=True)
time.sleep(0.1)
"""


def test_new_children_are_found_and_their_threads_are_not_taken_for_processes(tmp_path):
    from tests.support.helpers import trace

    status, run = trace(tmp_path, CHILD_WITH_THREADS)
    assert status == 0
    procs = run.procs
    # The root and its one child: not the child's six threads, whose pids
    # were handed out just as a child's would be (and whose stat names the
    # root as their parent).
    assert procs["pid"].nunique() == 2, procs
    child = procs[~procs["root"]].iloc[0]
    threads = run.threads[run.threads["pid"] == child["pid"]]
    assert threads["tid"].nunique() == 7


def test_probed_thread_ids_of_a_traced_child_are_not_new_processes():
    # root -> child; the child starts 6 threads when told.  Their ids are new
    # pids whose stat names the root as parent, like a new child's would.
    src = """
import subprocess, sys
code = ("import sys, threading, time\\n"
        "print('ready', flush=True)\\n"
        "sys.stdin.readline()\\n"
        "ts = [threading.Thread(target=time.sleep, args=(5,), daemon=True) for _ in range(6)]\\n"
        "[t.start() for t in ts]\\n"
        "print('threads', flush=True)\\n"
        "time.sleep(5)\\n")
child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
print("ready", flush=True)
child.stdin.write(sys.stdin.readline()); child.stdin.flush()
print(child.stdout.readline().strip(), flush=True)
time.sleep(5)
"""
    proc = subprocess.Popen(
        [__import__("sys").executable, "-c", "import time\n" + src],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "ready"
        b = ProcBackend(taskstats=False)
        assert b.new_children({proc.pid}, set()) == [(child, proc.pid)]
        before = b.fork_watch()[1]
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "threads"
        found = b.new_children({proc.pid, child}, set())
        if b.fork_watch()[1] - before >= proctree.PID_PROBE_MAX:
            pytest.skip("too many pids handed out meanwhile: /proc was listed, not probed")
        assert b.fork_watch()[1] - before >= 6  # the threads took pid numbers
        assert found == []
    finally:
        proc.kill()
        proc.wait()


def test_a_child_that_exits_keeps_its_final_cpu_totals(tmp_path):
    # The child burns CPU, exits and is left a zombie: the exit itself moves
    # its schedstat, so the idle shortcut cannot hide the final totals.
    out = tmp_path / "cpu.txt"
    from tests.support.helpers import trace

    status, run = trace(
        tmp_path,
        f"""
import os, time
pid = os.fork()
if pid == 0:
    end = time.process_time() + 0.4
    while time.process_time() < end:
        pass
    with open({str(out)!r}, "w") as f:
        f.write(repr(time.process_time()))
    os._exit(0)
# Its exit waited for but not reaped (WNOWAIT): sampled as a zombie a while.
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
time.sleep(0.3)
os.waitpid(pid, 0)
""",
    )
    assert status == 0
    burnt = float(out.read_text())
    kid = run.procs[~run.procs["root"]]["pid"].iloc[0]
    last = run.processes[run.processes["pid"] == kid].sort_values("t_ns").iloc[-1]
    threads = run.threads[run.threads["pid"] == kid].sort_values("t_ns")
    assert threads["state"].iloc[-1] == "Z"
    tick = 0.01  # user/system are in clock ticks
    assert abs((last["user_ns"] + last["system_ns"]) / 1e9 - burnt) <= 3 * tick
    assert threads["cpu_ns"].iloc[-1] / 1e9 >= burnt - 0.001


class _ScriptedFds(ProcBackend):
    """The real /proc backend on a real process, except for what its fd
    table and socket table say: scripted, to pin down one scan order."""

    def __init__(self, tables, addresses):
        super().__init__(taskstats=False)
        self.tables, self.addresses = tables, addresses
        self.scan = -1

    def fds(self, handle, known):
        self.scan += 1
        return dict(self.tables[self.scan])

    def sockets(self, pid, fds):
        known = self.addresses[self.scan]
        return {i: known[i] for i in fds.values() if i in known}


def test_a_socket_gets_its_address_even_when_the_next_scan_opens_another(tmp_path):
    # Three threads create sockets one scan apart, then all block in recv:
    # the earlier sockets must be resolved at the scans that open the later
    # ones, since no later scan may come while they are connected.
    from circuit.tracer.sampler import Sampler
    from circuit.tracer.sockdiag import Sock
    from circuit.tracer.writer import RunWriter

    peer = Sock("tcp ESTABLISHED", "127.0.0.1:5000", "127.0.0.1:80")
    backend = _ScriptedFds(
        tables=[
            {},
            {5: "socket:[100]"},
            {5: "socket:[100]", 6: "socket:[101]"},
            {5: "socket:[100]", 6: "socket:[101]", 7: "socket:[102]"},
        ],
        addresses=[{}, {}, {100: peer}, {100: peer, 101: peer, 102: peer}],
    )
    with Target() as t:
        writer = RunWriter(tmp_path, {"format_version": 1})
        s = Sampler(backend, writer, t.pid)
        tr = s.traced[t.pid]
        for i in range(4):
            s._scan_fds(tr, (i + 1) * 1_000_000, full=i == 0)
        s.close()
    events = [(r[2], r[3], r[8]) for r in writer.buffers["fds"]]
    assert (5, "open", "") in events  # not connected yet when first seen
    assert (5, "addr", "127.0.0.1:80") in events
    assert (6, "addr", "127.0.0.1:80") in events
    assert (7, "open", "127.0.0.1:80") in events
    assert not tr.table.unresolved


# One thread spinning; SIGUSR1 makes it start a second, sleeping thread.
SPINNER = """
import signal, threading, time
def more(*_):
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
signal.signal(signal.SIGUSR1, more)
print("ready", flush=True)
while True:
    pass
"""


def test_a_single_threaded_process_that_runs_reads_its_own_stat_only_now_and_then(monkeypatch):
    import os
    import signal

    from tests.support.helpers import Spawned

    b = ProcBackend(taskstats=False)
    reads = _counting_process_reads(b, monkeypatch)
    with Spawned(SPINNER) as t, _opened(b, t.pid) as h:
        samples = []
        for _ in range(100):
            samples.append(b.sample(h, {}, time.monotonic_ns()))
            time.sleep(0.005)  # > one scheduler tick: a running thread's schedstat moves at ticks
        os.kill(t.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while (prow := b.sample(h, {}, time.monotonic_ns())[0])[2] < 2:
            assert time.monotonic() < deadline, "the new thread was never seen"
            time.sleep(0.002)
        rows = b.sample(h, {}, time.monotonic_ns())[1]
    ran = sum(1 for _, _, r in samples if r)
    assert ran >= 50  # it spins: nearly every sample sees it ran
    # The thread's stat every time it ran; the process's only with the other
    # slow counters, at most every SLOW_COUNTER_NS (~every 4th sample here).
    span_ns = reads[-1] - reads[0] if len(reads) > 1 else 0
    assert len(reads) <= 2 + span_ns // procbackend.SLOW_COUNTER_NS + 10 < ran
    # What the thread's stat told about the process is exact on every sample.
    for prow1, rows1, _ in samples:
        assert prow1[:3] == (t.pid, os.getpid(), 1)
        assert len(rows1) == 1 and rows1[0][1] == t.pid
    # Its CPU totals are carried at most SLOW_COUNTER_NS (+ clock-tick rounding).
    prow1, rows1, _ = samples[-1]
    proc_cpu = prow1[4] + prow1[5]
    thread_cpu = rows1[0][10]
    assert thread_cpu - proc_cpu <= procbackend.SLOW_COUNTER_NS + 30_000_000
    # A second thread: the full path again, both threads listed.
    assert prow[2] == 2 and len(rows) == 2


def _state(pid: int, tid: int | None = None) -> str:
    """The kernel state of a process, or of one of its threads."""
    from pathlib import Path

    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    return Path(path).read_text().rsplit(")", 1)[1].split()[0]


def test_an_exited_process_reports_its_final_io_totals_however_recent_the_last_read(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "w.bin"
    src = (
        "import os, sys\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        f"fd = os.open({str(out)!r}, os.O_WRONLY | os.O_CREAT)\n"
        "os.write(fd, b'x' * 3_000_000)\n"
        "os._exit(0)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", src], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    b = ProcBackend(taskstats=False)
    try:
        assert proc.stdout.readline().strip() == "ready"
        h = b.open(proc.pid)
        t0 = time.monotonic_ns()
        b.sample(h, {}, t0)  # the slow counters (RSS, I/O) are read now...
        proc.stdin.write("go\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        while _state(proc.pid) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # ...and, 1 ms later by the sampler's clock, not due again: the exit
        # makes them due anyway.
        prow, _, _ = b.sample(h, {}, t0 + 1_000_000)
        b.close(h)
    finally:
        proc.kill()
        proc.wait()
    assert h.zombie
    assert prow[7] >= 3_000_000  # write_chars
