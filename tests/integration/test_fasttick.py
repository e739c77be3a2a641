"""The C steady-state tick (tracer/backends/_fasttick.c) against the Python path.

The Python path (``Sampler._sample``) is the reference: the C tick must
give the same rows, and hand a process back whenever it cannot.  Both run
side by side here on the same live target, one tick each in turn.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import threading
import time

import pytest

import circuit
from circuit.tracer.backends import ProcBackend, fasttick
from circuit.tracer.sampler import Sampler
from circuit.tracer.schema import FORMAT_VERSION
from circuit.tracer.writer import RunWriter
from tests.support.helpers import Spawned

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="the /proc path"),
]

try:
    from circuit.tracer.backends import _fasttick  # type: ignore[attr-defined]
except ImportError:
    _fasttick = None

needs_c = pytest.mark.skipif(_fasttick is None, reason="the C tick is not built here")

# One thread spinning (it runs: state R every sample), four blocked for good.
TARGET = """
import threading
ev = threading.Event()
for _ in range(4):
    threading.Thread(target=ev.wait, daemon=True).start()
print("ready", flush=True)
while True:
    pass
"""


def test_the_c_tick_is_built_where_a_compiler_is():
    # pip builds it at install (setup.py, optional=True); a compile error
    # would only print a warning there, and circuit would quietly sample in
    # Python at several times the CPU.
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: circuit samples in Python")
    assert _fasttick is not None, (
        "tracer/backends/_fasttick.c did not build: see the pip install log"
    )
    assert _fasttick.API == fasttick.API


def _sampler(
    tmp_path, name: str, pid: int, python: bool, monkeypatch, taskstats: bool = False
) -> Sampler:
    if python:
        monkeypatch.setenv("CIRCUIT_PYTHON_TICK", "1")
    else:
        monkeypatch.delenv("CIRCUIT_PYTHON_TICK", raising=False)
    (tmp_path / name).mkdir()
    s = Sampler(ProcBackend(taskstats=taskstats), RunWriter(tmp_path / name, {}), pid)
    assert (s.fast is None) == python
    return s


@needs_c
def test_c_and_python_ticks_give_the_same_rows(tmp_path, monkeypatch):
    with Spawned(TARGET) as t:
        c = _sampler(tmp_path, "c", t.pid, False, monkeypatch)
        py = _sampler(tmp_path, "py", t.pid, True, monkeypatch)
        seq = []  # (which, processes row, thread rows) in the order read
        try:
            for _ in range(60):
                for name, s in (("c", c), ("py", py)):
                    s.tick(time.monotonic_ns())
                    prow = s.sink.buffers["processes"][-1]
                    rows = s.sink.thread_batches[-1][1]
                    seq.append((name, prow, {r[1]: r for r in rows}))
                time.sleep(0.003)
            handled = set(c.fast.loaded)
        finally:
            c.close()
            py.close()
    assert t.pid in handled  # the C tick took the process (and kept it)
    spinner = None
    for name, prow, rows in seq:
        assert len(prow) == len(seq[0][1]) and len(rows) == 5
        assert prow[1:4] == (t.pid, os.getpid(), 5)
        for tid, row in rows.items():
            assert len(row) == 15
            assert [type(v) for v in row] == [type(v) for v in seq[0][2][tid]], (name, row)
            if row[3] == "R":
                spinner = tid
                assert row[4:8] == ("running", -1, 0, "")
    assert spinner is not None
    # The blocked threads never ran: both paths give the very same values.
    for tid in seq[0][2]:
        if tid != spinner:
            assert len({rows[tid] for _, _, rows in seq}) == 1
    # Each path's own counters never go back...
    for which in ("c", "py"):
        mine = [(prow, rows[spinner]) for name, prow, rows in seq if name == which]
        for col in (8, 9, 10, 11, 12, 13):
            vals = [row[col] for _, row in mine]
            assert vals == sorted(vals), (which, col)
        for col in (5, 6):  # the process's user and system time
            vals = [prow[col] for prow, _ in mine]
            assert vals == sorted(vals), (which, col)
    # ...and the two read the same counters: a few ms apart, the values
    # differ by what the thread did meanwhile (CPU times move in 10 ms
    # clock ticks; a path carries the context switches and the process's
    # totals up to SLOW_COUNTER_NS between reads).
    for (_, cp, crows), (_, pp, prows) in zip(seq[::2], seq[1::2], strict=True):
        c_row, p_row = crows[spinner], prows[spinner]
        assert c_row[2] == p_row[2]  # the name
        for col in (8, 9, 10, 11):
            assert abs(c_row[col] - p_row[col]) <= 50_000_000, col
        for col in (12, 13):
            assert abs(c_row[col] - p_row[col]) <= 100, col
        for col in (5, 6):
            assert abs(cp[col] - pp[col]) <= 50_000_000, col
    cpu = [rows[spinner][10] for _, _, rows in seq]
    assert cpu[-1] - cpu[0] > 50_000_000  # it spun all along: > 50 ms in 60 rounds


SLEEPER = """
import sys, time
print("ready", flush=True)
sys.stdin.readline()
end = time.perf_counter() + 0.05
while time.perf_counter() < end:
    pass
time.sleep(30)
"""


@needs_c
def test_a_thread_that_ran_and_sleeps_again_is_handed_to_python(tmp_path, monkeypatch):
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-c", SLEEPER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        s = _sampler(tmp_path, "c", proc.pid, False, monkeypatch)
        try:
            for _ in range(3):
                s.tick(time.monotonic_ns())
            assert proc.pid in s.fast.loaded
            proc.stdin.write("go\n")
            proc.stdin.flush()
            time.sleep(0.3)  # it spun 50 ms and went to sleep in nanosleep
            s.tick(time.monotonic_ns())
            row = s.sink.thread_batches[-1][1][0]
        finally:
            s.close()
    finally:
        proc.kill()
        proc.wait()
    # A sleeping thread needs its syscall to say why: only Python reads it.
    assert row[3] == "S" and row[4] == "sleep", row
    assert row[10] >= 40_000_000


def test_circuit_python_tick_turns_the_c_tick_off(tmp_path, monkeypatch):
    with Spawned(TARGET) as t:
        s = _sampler(tmp_path, "py", t.pid, True, monkeypatch)
        s.tick(time.monotonic_ns())
        s.close()
    assert s.fast is None


# A new thread every 2 ms (each sleeps for good): at each sample the thread
# count moved, which only the Python path can take (new threads to open).
ROUNDS = """
import threading, time
print("ready", flush=True)
while True:
    time.sleep(0.002)
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
"""

# A thread that wakes every 2 ms and then blocks reading the next of 16
# TCP connections: at each sample it sleeps on an fd it has not slept on
# lately (the C tick keeps the last 4 places), so the C tick classifies a
# new wait; read(2) on a TCP socket waits in wait_woken, which only the fd's
# kind names.
PIPES = """
import os, socket, threading, time
lis = socket.create_server(("127.0.0.1", 0))
pairs = []
for _ in range(16):
    c = socket.create_connection(lis.getsockname())
    a, _ = lis.accept()
    pairs.append((a, c))
def reader():
    i = 0
    while True:
        os.read(pairs[i % 16][0].fileno(), 1)
        i += 1
threading.Thread(target=reader, daemon=True).start()
print("ready", flush=True)
i = 0
while True:
    time.sleep(0.002)
    pairs[i % 16][1].send(b"x")
    i += 1
"""


@needs_c
def test_a_new_wait_is_classified_in_c_as_on_the_python_path(tmp_path, monkeypatch):
    # Without a hand-back: the reader's rows name the socket (from the fd's
    # kind) and the fd, and its wait channel, as the Python path names them.
    with Spawned(PIPES) as t:
        s = _sampler(tmp_path, "c", t.pid, False, monkeypatch)
        try:
            for _ in range(40):
                time.sleep(0.01)
                s.tick(time.monotonic_ns())
            loaded, backs = set(s.fast.loaded), dict(s.fast.backs)
            handle = s.traced[t.pid].handle
            s.fast.sync(handle, s.traced[t.pid].schedule)
            slept = [r for th in handle.order for r in th.slept]
            rows = [r for _, batch in s.sink.tick_buffers().thread_batches for r in batch]
        finally:
            s.close()
    assert t.pid in loaded
    assert backs.get(t.pid, (0, 0))[1] < fasttick.FAST_MAX_BACKS
    reader = [r for r in rows if r.tid != t.pid and r.syscall == 0]  # read(2)
    assert len(reader) >= 20
    assert {r.wait for r in reader} == {"socket"}
    assert len({r.arg0 for r in reader}) >= 8  # many sockets, most of them new to the C tick
    assert all(r.wchan and r.state == "S" for r in reader)
    # ThreadState.slept holds the latest 4 distinct places, newest first.
    mine = [r for r in slept if r.tid != t.pid]
    assert 1 <= len(mine) <= 4 and len({(r.syscall, r.arg0) for r in mine}) == len(mine)


@needs_c
def test_a_process_handed_back_every_sample_stays_on_the_python_path(tmp_path, monkeypatch):

    with Spawned(ROUNDS) as t:
        s = _sampler(tmp_path, "c", t.pid, False, monkeypatch)
        try:
            for _ in range(40):
                time.sleep(0.01)
                s.tick(time.monotonic_ns())
                if t.pid in s.fast.retry:
                    break
            retry, loaded, backs = dict(s.fast.retry), set(s.fast.loaded), dict(s.fast.backs)
        finally:
            s.close()
    # Set aside after FAST_MAX_BACKS hand-backs in a row.
    assert t.pid in retry and t.pid not in loaded
    assert backs[t.pid][1] == fasttick.FAST_MAX_BACKS


@needs_c
def test_the_time_set_aside_doubles_while_hand_backs_go_on(tmp_path, monkeypatch):
    # From FAST_RETRY_MIN_NS (a flat second kept a starting interpreter, whose
    # fd table changes while it imports, out of C for a whole short job).

    waits = []
    with Spawned(ROUNDS) as t:
        s = _sampler(tmp_path, "c", t.pid, False, monkeypatch)
        try:
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                time.sleep(0.01)
                s.tick(time.monotonic_ns())
                w = s.fast.waits.get(t.pid, (0, 0))[0]
                if w and (not waits or waits[-1] != w):
                    waits.append(w)
        finally:
            s.close()
    lo = fasttick.FAST_RETRY_MIN_NS
    assert waits[:3] == [lo, 2 * lo, 4 * lo], waits
    assert max(waits) <= fasttick.FAST_RETRY_NS


# Two threads taking turns on the GIL: after its turn, each waits for the
# GIL in a futex (one of the same two or three, again and again).
CONTENDED = """
import threading
def spin():
    while True:
        pass
for _ in range(2):
    threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


@needs_c
def test_threads_taking_turns_on_the_gil_stay_in_c_with_the_rows_of_python(tmp_path, monkeypatch):
    with Spawned(CONTENDED) as t:
        c = _sampler(tmp_path, "c", t.pid, False, monkeypatch)
        py = _sampler(tmp_path, "py", t.pid, True, monkeypatch)
        handed = []  # per C sample: did the Python path take the process?
        finish = c._finish_tick
        monkeypatch.setattr(
            c,
            "_finish_tick",
            lambda t_ns, ran, back, n, scan: (
                handed.append(t.pid in back or t.pid not in c.fast.loaded),
                finish(t_ns, ran, back, n, scan),
            ),
        )
        seq = []
        try:
            # Past FAST_RETRY_NS: while it learns where each thread sleeps
            # (the first samples), the process may be set aside once.
            end = time.monotonic() + 1.6
            while time.monotonic() < end:
                for name, s in (("c", c), ("py", py)):
                    s.tick(time.monotonic_ns())
                    seq.append((name, {r[1]: r for r in s.sink.thread_batches[-1][1]}))
                time.sleep(0.005)
        finally:
            c.close()
            py.close()
    # Then the C tick takes it: hand-backs only for what the Python path
    # must do (fd scans, the mappings, a thread asleep somewhere new).
    late = handed[-40:]
    assert len(late) == 40 and sum(late) <= 10, handed
    # Asleep rows: waiting for the GIL (a futex: `lock`), and the same wait
    # and wait channel from either path wherever both saw a thread sleep.
    asleep: dict[str, dict[tuple, tuple]] = {"c": {}, "py": {}}
    for name, rows in seq:
        for row in rows.values():
            if row[3] != "R" and row[5] >= 0:
                asleep[name][(row[1], row[3], row[5], row[6])] = (row[4], row[7])
    both = asleep["c"].keys() & asleep["py"].keys()
    assert both and all(asleep["c"][k] == asleep["py"][k] for k in both), asleep
    assert {w for w, _ in asleep["c"].values()} == {"lock"}, asleep


@needs_c
@pytest.mark.parametrize("python", [False, True])
def test_the_run_says_which_tick_sampled_it(tmp_path, monkeypatch, python):
    from tests.support.helpers import trace

    if python:
        monkeypatch.setenv("CIRCUIT_PYTHON_TICK", "1")
    else:
        monkeypatch.delenv("CIRCUIT_PYTHON_TICK", raising=False)
    status, run = trace(tmp_path, "import time; time.sleep(0.2)")
    assert status == 0
    assert run.meta["tick"] == ("python" if python else "c")
    assert 0 <= run.meta["samples_in_c_loop"] <= run.meta["samples"]
    if python:
        assert run.meta["samples_in_c_loop"] == 0


@needs_c
def test_without_fd_scans_a_busy_process_is_sampled_in_c_too(tmp_path, monkeypatch):
    """--no-fds once kept every process on the Python path (its first fd scan,
    which never came, was what let the C tick take it)."""
    from tests.support.helpers import trace

    monkeypatch.delenv("CIRCUIT_PYTHON_TICK", raising=False)
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    status, run = trace(tmp_path, spin, fds=False)
    assert status == 0 and run.meta["tick"] == "c"
    assert run.meta["samples_in_c_loop"] >= run.meta["samples"] / 4, run.meta
    assert run.fds.empty and (run.processes["fds"] == 0).all()


# Runs, then sleeps, then runs: samples land on either, so the C tick and the
# Python path take turns on the same process.  Each carries some counters
# between reads (context switches, I/O, CPU totals): the data must still
# never step back where one takes over from the other.
TURNS = """
import os, threading, time
def work(path):
    with open(path, "wb") as f:
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            t = time.perf_counter() + 0.003
            while time.perf_counter() < t:
                pass
            f.write(b"x" * 4096)
            f.flush()
            time.sleep(0.002)
ts = [threading.Thread(target=work, args=(os.devnull,)) for _ in range(2)]
[t.start() for t in ts]
work(os.devnull)
[t.join() for t in ts]
"""


@needs_c
def test_cumulative_counters_never_step_back_when_the_ticks_take_turns(tmp_path, monkeypatch):
    from tests.support.helpers import trace

    monkeypatch.delenv("CIRCUIT_PYTHON_TICK", raising=False)
    status, run = trace(tmp_path, TURNS, rate=500)
    assert status == 0 and run.meta["tick"] == "c"
    th = run.threads.sort_values(["pid", "tid", "t_ns"])
    for col in ("user_ns", "system_ns", "cpu_ns", "run_delay_ns", "ctx_vol", "ctx_invol"):
        steps = th.groupby(["pid", "tid"])[col].diff().dropna()
        assert (steps >= 0).all(), (col, steps[steps < 0].head())
    pr = run.processes.sort_values(["pid", "t_ns"])
    for col in ("user_ns", "system_ns", "read_chars", "write_chars"):
        steps = pr.groupby("pid")[col].diff().dropna()
        assert (steps >= 0).all(), (col, steps[steps < 0].head())
    assert pr["write_chars"].max() > 100 * 4096  # it did write


# -- the C loop (Sampler.burst): run_loop's sleeps and ticks in C ------------

IDLE = """
import threading
ev = threading.Event()
for _ in range(3):
    threading.Thread(target=ev.wait, daemon=True).start()
print("ready", flush=True)
ev.wait()
"""


def _run_for(s: Sampler, rate: float, seconds: float, on_tick=None, due=None):
    """run_loop for ``seconds``, stopping on its own clock (``until_ns``)."""
    from circuit.tracer.loop import run_loop

    end = time.monotonic() + seconds
    return run_loop(
        s,
        rate,
        lambda left: (time.sleep(max(left, 0)), time.monotonic() > end)[1],
        on_tick,
        until_ns=round(end * 1e9),
        due=due,
    )


def _loaded(tmp_path, monkeypatch, pid: int) -> Sampler:
    """A sampler whose C tick holds ``pid`` (after its first Python sample)."""
    s = _sampler(tmp_path, "c", pid, False, monkeypatch)
    for _ in range(3):
        s.tick(time.monotonic_ns())
        time.sleep(0.002)
    assert s.can_burst
    return s


@needs_c
def test_the_c_loop_takes_the_samples_of_an_idle_target(tmp_path, monkeypatch):
    with Spawned(IDLE) as t:
        s = _sampler(tmp_path, "c", t.pid, False, monkeypatch)
        try:
            stats = _run_for(s, 200, 0.6)
        finally:
            s.close()
        s.sink.finalize({"format_version": FORMAT_VERSION})
    # Python looks at the end, the flush and after BURST_MAX_NS; the C loop takes the rest.
    assert stats.c_samples >= stats.samples / 2, stats
    assert s.samples == stats.samples and s.c_samples == stats.c_samples
    # Every sample holds all 4 threads, each at its own time.
    th = circuit.load(tmp_path / "c").threads
    per_t = th.groupby("t_ns").size()
    assert len(per_t) == stats.samples and set(per_t) == {4}
    assert s.thread_samples == 4 * stats.samples


@needs_c
def test_python_wakes_when_due_says_and_otherwise_at_the_flush(tmp_path, monkeypatch):
    # Each return to Python is a Python tick (~2x a C one): the loop leaves C
    # only when something is due, not on a fixed beat.
    ticks: dict[str, list[int]] = {"none": [], "every 50 ms": []}
    with Spawned(IDLE) as t:
        for name, step in (("none", None), ("every 50 ms", 50_000_000)):
            where = tmp_path / name.replace(" ", "_")
            where.mkdir()
            s = _loaded(where, monkeypatch, t.pid)
            due = None if step is None else (lambda step=step: time.monotonic_ns() + step)
            try:
                stats = _run_for(s, 200, 0.8, ticks[name].append, due)
            finally:
                s.close()
            assert stats.samples > 100, stats

    # ~160 samples in 0.8 s.  Without `due`, Python ran for the first
    # sample, the end, and the fd scans, whose interval doubles on a quiet
    # table (before, it also ran every 100 ms); asked every 50 ms, ~16 times.
    def gaps(t: list[int]) -> list[int]:
        return [b - a for a, b in itertools.pairwise(t)]

    assert max(gaps(ticks["none"])) > 150_000_000, gaps(ticks["none"])
    assert len(ticks["every 50 ms"]) >= 10, ticks["every 50 ms"]
    assert max(gaps(ticks["every 50 ms"])) < 250_000_000, gaps(ticks["every 50 ms"])


@needs_c
def test_a_pending_signal_or_a_readable_fd_ends_the_c_loop_before_it_sleeps(tmp_path, monkeypatch):
    import signal
    import threading

    with Spawned(IDLE) as t:
        s = _loaded(tmp_path, monkeypatch, t.pid)
        period = 10_000_000
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        r, w = os.pipe()
        try:
            # To this thread (others may not block it): blocked, it stays pending.
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
            now = time.monotonic_ns()
            # A loop told to run 10 s would sleep to its first deadline (1 s
            # away) and sample: a pending signal returns at once, untaken.
            done, _, deadline, _, taken = s.burst(
                now + 1_000_000_000, period, now + 10_000_000_000, (signal.SIGUSR1,)
            )
            assert (done, taken, deadline) == (0, 0, now + 1_000_000_000)
            assert signal.SIGUSR1 in signal.sigpending()  # left for Python's wait
            assert signal.sigtimedwait({signal.SIGUSR1}, 0) is not None
            # The same with the fd it watches (circuit.trace()'s stop pipe).
            os.write(w, b"x")
            now = time.monotonic_ns()
            done, _, deadline, _, taken = s.burst(
                now + 1_000_000_000, period, now + 10_000_000_000, (signal.SIGUSR1,), r
            )
            assert (done, taken, deadline) == (0, 0, now + 1_000_000_000)
        finally:
            os.close(r)
            os.close(w)
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            s.close()


@needs_c
def test_the_c_loop_stops_at_until(tmp_path, monkeypatch):
    with Spawned(IDLE) as t:
        s = _loaded(tmp_path, monkeypatch, t.pid)
        try:
            period = 2_000_000
            start = time.monotonic_ns() + period
            done, missed, deadline, _, taken = s.burst(start, period, start + 3 * period)
        finally:
            s.close()
    # The deadlines before `until`: at most 3 samples (fewer when late, or
    # when the process files were due and Python took one: `taken`).
    assert done + (1 if taken else 0) + missed >= 1 and done <= 3
    assert taken or deadline >= start + 3 * period


FORKS = """
import subprocess, sys
print("ready", flush=True)
sys.stdin.readline()
subprocess.run(["sleep", "0.3"])
"""


@needs_c
def test_a_child_forked_while_the_c_loop_samples_is_found(tmp_path, monkeypatch):
    import subprocess

    from circuit.tracer.loop import run_loop

    with Spawned(FORKS, stdin=subprocess.PIPE) as t:
        s = _loaded(tmp_path, monkeypatch, t.pid)
        assert t.proc.stdin is not None
        t.proc.stdin.write("go\n")
        t.proc.stdin.flush()
        try:
            stats = run_loop(
                s, 100, lambda left: (time.sleep(max(left, 0)), t.proc.poll() is not None)[1]
            )
        finally:
            s.close()
    assert stats.c_samples > 0
    assert len(s.seen) == 2, s.seen  # the target and its `sleep`


@needs_c
def test_pids_handed_out_to_other_processes_do_not_stop_the_c_loop(tmp_path, monkeypatch):
    import subprocess

    # The spinner runs every sample, so each sample looks for new children;
    # a process forked elsewhere (here: by the test) moves /proc/loadavg's
    # last pid, and its `stat` says it is no child of ours.
    with Spawned(TARGET) as t:
        s = _loaded(tmp_path, monkeypatch, t.pid)
        looks = []
        real = s.backend.new_children
        monkeypatch.setattr(s.backend, "new_children", lambda *a: looks.append(1) or real(*a))
        try:
            other = subprocess.run(["true"], check=True).args  # a pid handed out elsewhere
            assert other
            before = s.backend.fork_watch()[1]
            period = 5_000_000
            done = 0
            for _ in range(50):  # (a burst ends early when Python has a scan or a read due)
                start = time.monotonic_ns() + period
                done += s.burst(start, period, start + 20 * period)[0]
                if done >= 10:
                    break
            after = s.backend.fork_watch()[1]
        finally:
            s.close()
    assert done >= 10
    assert after > before and not looks  # moved on in C, no Python look
    assert s.seen == {t.pid}


def test_run_loop_never_asks_for_a_negative_wait():
    # A burst that returns as its next deadline passes (the C loop stops
    # before sleeping past `until`; Python resumes a moment later): the
    # wait gets 0, not a negative timeout (time.sleep would raise).
    from types import SimpleNamespace

    from circuit.tracer.loop import run_loop

    class Late:
        period_ns = 0
        alive = True
        can_burst = True
        fd_scan_ns = 0
        sink = SimpleNamespace(last_flush=time.monotonic(), flush=lambda: None)

        def tick(self, t_ns):
            pass

        def burst(self, deadline, period, until, signals, watch_fd):
            return 0, 0, time.monotonic_ns() - 1_000_000, 0, 0  # a deadline just gone

    timeouts = []
    run_loop(Late(), 100, lambda t: timeouts.append(t) or len(timeouts) >= 3)
    assert timeouts == [0.0, 0.0, 0.0]


# A middle process forks an idle grandchild, says its pid, and exits when told.
ORPHAN = """
import os, sys, threading
pid = os.fork()
if pid == 0:
    sys.stdin.close()
    threading.Thread(target=threading.Event().wait, daemon=True).start()
    threading.Event().wait()
print(pid, flush=True)
sys.stdin.readline()
os._exit(0)
"""


@needs_c
def test_an_idle_process_is_refreshed_in_c_and_its_new_parent_seen(tmp_path, monkeypatch):
    # Every IDLE_REFRESH samples an idle process's own files are read again
    # (its parent may change): in C, not by handing it to the Python path,
    # which cost a Python tick (and the end of a burst) each time.
    import subprocess

    middle = subprocess.Popen(
        [sys.executable, "-c", ORPHAN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert middle.stdin is not None and middle.stdout is not None
    orphan = int(middle.stdout.readline())
    try:
        time.sleep(0.2)  # (its threads started)
        s = _loaded(tmp_path, monkeypatch, orphan)
        # Past its first second (the mappings' last re-read, MAPS_REREAD_NS,
        # takes the Python path).
        until = time.monotonic() + 1.2
        while time.monotonic() < until:
            s.tick(time.monotonic_ns())
            time.sleep(0.02)
        # Orphaned while the C loop samples it: only a refresh there sees it.
        threading.Timer(0.3, lambda: (middle.stdin.write("go\n"), middle.stdin.flush())).start()
        try:
            stats = _run_for(s, 200, 1.5)
        finally:
            s.close()
        s.sink.finalize({"format_version": FORMAT_VERSION})
    finally:
        os.kill(orphan, 9)
    # ~300 samples, 6 refreshes: Python took the first, the flush and the end
    # (a hand-back per refresh: 9).
    assert stats.samples > 150, stats
    assert stats.samples - stats.c_samples <= 4, stats
    middle.wait(timeout=10)
    ppids = circuit.load(tmp_path / "c").processes.sort_values("t_ns")["ppid"]
    assert ppids.iloc[0] == middle.pid and ppids.iloc[-1] != middle.pid, ppids.unique()


# Nine threads: one spins until told, then all wait for good.
BIG = """
import sys, threading
ev, stop = threading.Event(), threading.Event()
for _ in range(7):
    threading.Thread(target=ev.wait, daemon=True).start()
def spin():
    while not stop.is_set():
        pass
    ev.wait()
threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
stop.set()
ev.wait()
"""


@needs_c
def test_a_big_process_is_in_c_while_it_runs_and_with_taskstats_while_it_idles(
    tmp_path, monkeypatch
):
    import subprocess

    from circuit.tracer.backends.fasttick import TASKSTATS_IDLE_BACK

    with Spawned(BIG, stdin=subprocess.PIPE) as t:
        s = _sampler(tmp_path, "c", t.pid, False, monkeypatch, taskstats=True)
        if s.backend._taskstats is None:
            s.close()
            pytest.skip("taskstats needs root (CAP_NET_ADMIN)")
        try:
            for _ in range(10):
                s.tick(time.monotonic_ns())
                time.sleep(0.005)
            running = t.pid in s.fast.loaded
            assert t.proc.stdin is not None
            t.proc.stdin.write("idle\n")
            t.proc.stdin.flush()
            time.sleep(0.05)
            for _ in range(TASKSTATS_IDLE_BACK + 5):
                s.tick(time.monotonic_ns())
                time.sleep(0.005)
            idle = t.pid in s.fast.loaded
            fingerprint = s.traced[t.pid].handle.fp
        finally:
            s.close()
    assert running and not idle
    assert fingerprint is not None  # the Python path asks taskstats


# A spinning thread (so its fd table is rescanned less and less often) and a
# main thread that opens a file when told.
OPENS = """
import os, sys, threading
def spin():
    while True:
        pass
threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
os.open(sys.executable, os.O_RDONLY)
print("opened", flush=True)
threading.Event().wait()
"""


@needs_c
def test_an_fd_opened_while_the_c_tick_holds_the_process_is_seen_at_once(tmp_path, monkeypatch):
    # Its fd count moved: the C tick hands it back and the Python path scans
    # at that very tick (FdSchedule.due), not at a later one.
    import subprocess

    ticks = []

    def tick_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ticks.append(time.monotonic_ns())
            s.tick(ticks[-1])
            time.sleep(0.01)  # (more than CHECK_MIN_NS: the count is checked every tick)

    with Spawned(OPENS, stdin=subprocess.PIPE) as t:
        s = _sampler(tmp_path, "c", t.pid, False, monkeypatch)
        if s.backend.fd_count(s.traced[t.pid].handle) is None:
            s.close()
            pytest.skip("this kernel does not count a process's fds (Linux < 6.2)")
        try:
            tick_for(1.5)  # its scans back off: the next is far
            assert t.proc.stdin is not None and t.proc.stdout is not None
            t.proc.stdin.write("go\n")
            t.proc.stdin.flush()
            assert t.proc.stdout.readline().strip() == "opened"
            opened = time.monotonic_ns()
            tick_for(0.2)
        finally:
            s.close()
    path = os.path.realpath(sys.executable)
    seen = [r[0] for r in s.sink.buffers["fds"] if r[3] == "open" and r[5] == path]
    assert seen == [min(t for t in ticks if t > opened)], (seen, opened)


# Every ~30 ms a new pipe, which a thread then blocks reading: a wait in
# read(2) named by the kind of an fd the last fd look had not seen.
NEW_PIPES = """
import os, queue, threading, time
todo = queue.Queue()
def reader():
    while True:
        r = todo.get()
        os.read(r, 1)
threading.Thread(target=reader, daemon=True).start()
print("ready", flush=True)
while True:
    r, w = os.pipe()
    todo.put(r)
    time.sleep(0.03)
    os.write(w, b"x")
    time.sleep(0.005)
    os.close(r)
    os.close(w)
"""


@needs_c
def test_an_fd_look_after_the_c_tick_keeps_the_process_in_c(tmp_path, monkeypatch):
    # The look C asks for is done by Python without taking the process back;
    # a thread asleep in read() on an fd the look just learnt is reclassified
    # (a reload), as on the Python path.
    with Spawned(NEW_PIPES) as t:
        s = _sampler(tmp_path, "c", t.pid, False, monkeypatch)
        said = []
        real = s.fast.looked
        monkeypatch.setattr(s.fast, "looked", lambda *a: said.append(real(*a)) or said[-1])
        try:
            for _ in range(100):
                time.sleep(0.01)
                s.tick(time.monotonic_ns())
            backs = dict(s.fast.backs)
            rows = [r for _, batch in s.sink.tick_buffers().thread_batches for r in batch]
        finally:
            s.close()
    assert True in said and False in said, said
    assert backs.get(t.pid, (0, 0))[1] < fasttick.FAST_MAX_BACKS
    reads = [r for r in rows if r.tid != t.pid and r.syscall == 0 and r.state == "S"]
    assert len(reads) >= 20 and all(r.wait == "pipe" for r in reads), reads
