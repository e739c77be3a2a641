"""A target that measures itself: ``python truth_target.py`` prints JSON.

Three threads, each with a different life: ``spin`` (on a CPU), ``sleep``
(sleeps and wakes every half millisecond: many voluntary switches) and
``lock`` (blocked on a ``threading.Lock`` the main thread holds).  While they
work, each records its own context switches, CPU time and run-queue delay
now and then (a ``series``).  When all three
are done, each in turn takes a full reading (``getrusage(RUSAGE_THREAD)``,
``time.thread_time_ns()``, ``/proc/thread-self/schedstat``), sleeps a moment,
then blocks until the main thread lets it exit.  A sampler reading ``/proc``
from outside must see each thread after that sleep (it ran, and the last
read of its ``status`` is older than the sleep), so its last figures are
never below the thread's own and above them by only what the last few
switches add.

Meanwhile the process holds one file descriptor of every kind circuit tells
apart (``circuit.tracer.procfs.FD_KINDS``), numbers and link targets in the
JSON.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

WORK_S = 0.6  # each thread's work
LOCK_HELD_S = 0.4  # how long the main thread holds the lock the `lock` thread wants
SERIES_STEP_NS = 2_000_000  # the spinning thread's own readings, this often
STAGGER_S = 0.03  # full readings one after the other, not all at once (no GIL waits)
AFTER_S = 0.05  # sleep after the reading: more than SLOW_COUNTER_NS (20 ms)
HOLD_S = 0.3  # threads stay blocked this long after the last reading

CLOEXEC = 0o2000000  # O_CLOEXEC = TFD_CLOEXEC = SFD_CLOEXEC = IN_CLOEXEC
CLOCK_MONOTONIC = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _checked(fd: int) -> int:
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def open_every_kind(tmpdir: str) -> tuple[dict[str, list[int]], list[Any]]:
    """One fd (two for pipes and socket pairs) of every kind circuit knows;
    returns {kind: fds} and the objects that own some of them."""
    keep: list[Any] = []
    fds: dict[str, list[int]] = {}

    f = open(os.path.join(tmpdir, "data"), "wb")  # noqa: SIM115 (held for the run)
    keep.append(f)
    fds["file"] = [f.fileno()]
    a, b = socket.socketpair()
    keep += [a, b]
    fds["socket"] = [a.fileno(), b.fileno()]
    fds["pipe"] = list(os.pipe())
    ep = select.epoll()
    keep.append(ep)
    fds["epoll"] = [ep.fileno()]
    fds["eventfd"] = [os.eventfd(0, os.EFD_CLOEXEC)]
    fds["timerfd"] = [_checked(_libc.timerfd_create(CLOCK_MONOTONIC, CLOEXEC))]
    mask = ctypes.create_string_buffer(128)  # an empty sigset_t: takes no signal
    fds["signalfd"] = [_checked(_libc.signalfd(-1, mask, CLOEXEC))]
    fds["inotify"] = [_checked(_libc.inotify_init1(CLOEXEC))]
    dev = open(os.devnull, "rb")  # noqa: SIM115 (held for the run)
    keep.append(dev)
    fds["device"] = [dev.fileno()]
    fds["other"] = [os.pidfd_open(os.getpid())]  # anon_inode:[pidfd], or pidfd:[...]
    return fds, keep


def own_reading() -> dict[str, int]:
    """What the kernel says about the calling thread, between t_ns and after_ns."""
    t_ns = time.monotonic_ns()
    with open("/proc/thread-self/schedstat", "rb") as f:
        sched = f.read().split()
    thread_ns = time.thread_time_ns()
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return {
        "t_ns": t_ns,
        "after_ns": time.monotonic_ns(),
        "tid": threading.get_native_id(),
        "ctx_vol": ru.ru_nvcsw,
        "ctx_invol": ru.ru_nivcsw,
        "rusage_cpu_ns": round((ru.ru_utime + ru.ru_stime) * 1e9),
        "thread_time_ns": thread_ns,
        "sched_cpu_ns": int(sched[0]),
        "run_delay_ns": int(sched[1]),
        "scheduled": int(sched[2]),
    }


class Series(list):
    """The calling thread's own readings over time: [monotonic ns before,
    monotonic ns after, voluntary, involuntary switches, CPU ns, run delay
    ns], a few µs each, or more when the thread is preempted in between: the
    counts are from some moment between the two times."""

    def __init__(self) -> None:
        super().__init__()
        self.sched_fd = -1

    def add(self) -> None:
        if self.sched_fd < 0:  # (opened by the thread itself: thread-self is who opens it)
            self.sched_fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        t_ns = time.monotonic_ns()
        ru = resource.getrusage(resource.RUSAGE_THREAD)
        cpu_ns = time.thread_time_ns()
        delay_ns = int(os.pread(self.sched_fd, 128, 0).split()[1])
        self.append([t_ns, time.monotonic_ns(), ru.ru_nvcsw, ru.ru_nivcsw, cpu_ns, delay_ns])

    def close(self) -> None:
        if self.sched_fd >= 0:
            os.close(self.sched_fd)
            self.sched_fd = -1


def spin(series: Series) -> None:
    series.add()
    end = series[0][0] + round(WORK_S * 1e9)
    x = 0
    while (now := time.monotonic_ns()) < end:
        for i in range(500):
            x += i
        if now - series[-1][0] >= SERIES_STEP_NS:
            series.add()


def snooze(series: Series) -> None:
    end = time.monotonic() + WORK_S
    while time.monotonic() < end:
        time.sleep(0.0005)
        series.add()


def main() -> None:
    lock = threading.Lock()
    lock.acquire()

    def wait_for_lock(series: Series) -> None:
        series.add()
        with lock:
            series.add()

    work: dict[str, Callable[[Series], None]] = {
        "spin": spin,
        "sleep": snooze,
        "lock": wait_for_lock,
    }
    readings: dict[str, dict[str, int]] = {}
    series = {name: Series() for name in work}
    done = threading.Barrier(len(work))
    read = {name: threading.Event() for name in work}
    release = threading.Event()

    def body(i: int, name: str) -> None:
        work[name](series[name])
        series[name].close()
        done.wait()
        time.sleep(i * STAGGER_S)
        readings[name] = own_reading()
        read[name].set()
        time.sleep(AFTER_S)
        release.wait()

    with tempfile.TemporaryDirectory() as tmpdir:
        opened_ns = time.monotonic_ns()
        fds, keep = open_every_kind(tmpdir)
        targets = {k: [os.readlink(f"/proc/self/fd/{fd}") for fd in v] for k, v in fds.items()}
        threads = [
            threading.Thread(target=body, args=(i, name), name=name) for i, name in enumerate(work)
        ]
        for t in threads:
            t.start()
        time.sleep(LOCK_HELD_S)
        lock.release()
        for e in read.values():
            e.wait()
        time.sleep(HOLD_S)
        release.set()
        for t in threads:
            t.join()
        closing_ns = time.monotonic_ns()
        for k in ("pipe", "eventfd", "timerfd", "signalfd", "inotify", "other"):
            for fd in fds[k]:
                os.close(fd)
        for obj in keep:
            obj.close()
    out = {"pid": os.getpid(), "threads": readings, "series": series, "fds": fds}
    held = {"fds_opened_ns": opened_ns, "fds_closing_ns": closing_ns, "targets": targets}
    json.dump({**out, **held}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
