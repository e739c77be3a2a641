"""Sampling backends: where the numbers come from.

Both backends produce the same rows (see ``THREAD_FIELDS`` / ``PROCESS_FIELDS``
in :mod:`circuit.tracer.schema`) so the sampler, the run format and the
analysis never know which one ran.

* :class:`ProcBackend` (Linux): keeps every /proc file it needs open and
  re-reads it with ``pread``.  A thread whose ``schedstat`` line did not change
  since the last sample has not been on a CPU since, so its state, syscall and
  counters cannot have changed either: we reuse its previous row and pay one
  ~1 µs read instead of five.
* :class:`PsutilBackend`: the portable base, about 20x slower per thread.
"""

from __future__ import annotations

import errno
import operator
import os
from abc import ABC, abstractmethod
from collections.abc import Collection
from itertools import repeat
from typing import Any

from .. import procfs
from ..taskstats import TaskStats
from ..waits import Classifier

# A thread row, in schema order minus the timestamp:
# (pid, tid, name, state, wait, syscall, arg0, wchan,
#  user_ns, system_ns, cpu_ns, run_delay_ns, ctx_vol, ctx_invol, cpu)
ThreadRow = tuple
# A process row minus timestamp and fd counts:
# (pid, ppid, num_threads, rss_bytes, user_ns, system_ns,
#  read_chars, write_chars, read_bytes, write_bytes)
ProcessRow = tuple

_GONE = (errno.ESRCH, errno.ENOENT)

# Counters that are cumulative or slow-moving (RSS, I/O bytes, a thread's
# context switches) are re-read at most this often (50 Hz) and carried in
# between: their files (`status` ~10-19 µs of kernel time per thread on this
# VM) would otherwise dominate the sample of a thread that ran.
SLOW_COUNTER_NS = 20_000_000
# A process none of whose threads ran is not re-read (its row is reused);
# this many such samples in a row and it is re-read anyway, for what can
# change without it running: its parent (reparenting), RSS (reclaim).
IDLE_REFRESH = 50
# Processes with at least this many threads are first asked through taskstats
# (root only) whether any thread ran: one ~7 µs request instead of a read per thread.
TASKSTATS_MIN_THREADS = 8
# Child discovery probes the pids handed out since the last look when there
# are fewer than this; more, and it lists /proc.
PID_PROBE_MAX = 64


_REPEAT_128 = repeat(128)  # pread's size and offset for map(): endless, shared
_REPEAT_0 = repeat(0)


class ProcessGone(Exception):
    """The process exited between two reads; a normal race."""


class Backend(ABC):
    name: str = "?"

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.classify = Classifier()
        # More runnable tasks than CPUs at this tick: a thread asleep in its
        # last row may have been woken and be waiting for a CPU, so it is
        # read again even though it has not run (check_saturation).
        self.saturated = False

    def check_saturation(self) -> None:  # noqa: B027 (backends without the count never are)
        """Set ``saturated`` for this tick."""

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)

    @abstractmethod
    def open(self, pid: int) -> Any:
        """A handle for sampling ``pid``; raises ProcessGone."""

    @abstractmethod
    def close(self, handle: Any) -> None: ...

    def shutdown(self) -> None:  # noqa: B027 (most backends hold nothing more)
        """Release what the backend holds beyond its processes (sockets...)."""

    @abstractmethod
    def sample(
        self, handle: Any, fd_kinds: dict[int, str], t_ns: int = 0
    ) -> tuple[ProcessRow, list[ThreadRow], bool]:
        """(process row, thread rows, ran) for one process; raises ProcessGone.

        ``t_ns`` is the sample's time (slow counters are re-read at most every
        SLOW_COUNTER_NS; 0: read everything).  The rows list may be the very
        object returned last time, when nothing changed: never mutate it.

        ``ran`` is False when no thread of the process was on a CPU since the
        previous sample (so it cannot have forked or opened anything).  The
        handle's ``zombie`` attribute is then True if the process has exited.
        """

    @abstractmethod
    def fds(self, handle: Any, known: dict[int, str]) -> dict[int, str] | None:
        """fd number -> link target (``socket:[123]``, a path...); None if unreadable.

        ``known`` is the previous answer, so a backend may resolve only new fds.
        Negative numbers stand for fds the backend can count but not name.
        """

    def fd_count(self, handle: Any) -> int | None:
        """How many fds are open now, if the backend can tell cheaply; else None."""
        return None

    @abstractmethod
    def command(self, handle: Any) -> bytes:
        """The raw command line; it changes when the process execs."""

    @abstractmethod
    def sockets(self, pid: int) -> dict[int, tuple[str, str, str]]:
        """socket inode -> (protocol, local address, remote address)."""

    @abstractmethod
    def new_children(
        self,
        traced: set[int],
        exclude: set[int],
        adopter: int | None = None,
        own: Collection[int] = (),
    ) -> list[tuple[int, int]]:
        """(pid, ppid) of processes whose parent is traced and that are not yet
        traced; with ``adopter`` (circuit, made a child subreaper), also its
        children but ``own``: orphans of the traced tree, reparented to it."""

    @abstractmethod
    def info(self, pid: int) -> dict[str, Any]:
        """Static facts: ppid, name, exe, cmdline (list of str)."""


# --------------------------------------------------------------------- /proc


class _Thread:
    __slots__ = ("fds", "pcount", "row", "sched", "sched_fd", "slept", "status_ns", "tid")

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.fds: dict[str, int] = {}
        self.sched_fd = -1  # th.fds["schedstat"], kept apart: read for every thread, every sample
        self.sched = b""
        self.pcount = -1
        self.status_ns = 0  # when the context-switch counts (status) were last read
        self.row: ThreadRow | None = None
        # Its last rows asleep (not running, not in D), one per (state,
        # syscall, first argument), the latest first: a thread back where it
        # slept reuses that wait channel (a thread waiting for the GIL sleeps
        # on one of two futexes in turn: glibc's condition variables).
        self.slept: tuple[ThreadRow, ...] = ()


class _Proc:
    __slots__ = (
        "base",
        "fd_cmdline",
        "fd_dir",
        "fd_io",
        "fd_stat",
        "fd_statm",
        "fp",
        "io",
        "io_idx",
        "order",
        "pid",
        "prow",
        "relist",
        "rows",
        "rss",
        "sched_fds",
        "scheds",
        "skips",
        "slow_ns",
        "threads",
        "zombie",
    )

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = f"/proc/{pid}"
        self.threads: dict[int, _Thread] = {}
        self.relist = True
        self.fd_stat = -1
        self.fd_statm = -1
        self.fd_io = -1
        self.fd_cmdline = -1
        self.fd_dir = -1  # /proc/PID/fd, for its size: the number of open fds
        self.zombie = False  # exited, not yet reaped: its last sample holds the totals
        # The idle fast path (see ProcBackend.sample): the threads in a fixed
        # order, their schedstat fds and last lines, the last rows and row list.
        self.order: list[_Thread] = []
        self.scheds: list[bytes] | None = None
        self.sched_fds: list[int] = []
        self.rows: list[ThreadRow] | None = None
        self.io_idx: list[int] = []  # rows blocked in read/write (their fd's kind may be learnt)
        self.prow: ProcessRow | None = None
        self.skips = 0
        self.fp: tuple[int, int] | None = None  # taskstats fingerprint at the last sample
        # RSS and I/O counters: carried between reads at most SLOW_COUNTER_NS apart.
        self.slow_ns = -SLOW_COUNTER_NS
        self.rss = 0
        self.io = procfs.IOCounters(0, 0, 0, 0)


SLEPT_KEPT = 4  # rows in _Thread.slept


def _slept_as(slept: tuple[ThreadRow, ...], state: str, nr: int, arg0: int) -> ThreadRow | None:
    for row in slept:
        if row[3] == state and row[5] == nr and row[6] == arg0:
            return row
    return None


def _raise_fd_limit() -> bool:
    """Lift our soft RLIMIT_NOFILE to the hard limit; True if it went up.

    Up to five files stay open per thread: 1000 target threads need ~5000
    descriptors, and past the (often 1024) soft limit every read would become
    open + read + close.  Done on the first EMFILE, so a target we start
    never inherits the raised limit.
    """
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft == resource.RLIM_INFINITY or soft >= hard:
            return False
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return True
    except (ImportError, ValueError, OSError):
        return False


def _is_process(pid: int) -> bool:
    """True if ``pid`` is a process (thread group leader), not another thread's id."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
        i = status.index(b"\nTgid:")
        return int(status[i + 6 : status.index(b"\n", i + 1)]) == pid
    except (OSError, ValueError):
        return False


def _pread(fd: int, size: int = 1024) -> bytes:
    return os.pread(fd, size, 0)


class ProcBackend(Backend):
    name = "proc"

    def __init__(self, taskstats: bool = True) -> None:
        super().__init__()
        self.tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")
        self._loadavg = os.open("/proc/loadavg", os.O_RDONLY)
        self.ncpu = os.cpu_count() or 1
        self._last_pid = -1
        self._foreign: set[int] = set()
        self._can_syscall = True
        self._can_io = True
        self._fd_limit_raised = False
        self._taskstats = TaskStats.open() if taskstats else None

    # -- handles -------------------------------------------------------------

    def open(self, pid: int) -> _Proc:
        p = _Proc(pid)
        try:
            p.fd_stat = os.open(f"{p.base}/stat", os.O_RDONLY)
            p.fd_statm = os.open(f"{p.base}/statm", os.O_RDONLY)
            p.fd_cmdline = os.open(f"{p.base}/cmdline", os.O_RDONLY)
        except OSError as e:
            self.close(p)
            raise ProcessGone(pid) from e
        if self._can_io:
            try:
                p.fd_io = os.open(f"{p.base}/io", os.O_RDONLY)
            except PermissionError:
                self._can_io = False
                self.warn("/proc/PID/io is not readable: read/write byte counters are 0")
            except OSError:
                pass
        try:
            p.fd_dir = os.open(f"{p.base}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            pass  # not ours to read: the fd scan will say so
        return p

    def close(self, p: _Proc) -> None:
        for fd in (p.fd_stat, p.fd_statm, p.fd_io, p.fd_cmdline, p.fd_dir):
            if fd >= 0:
                os.close(fd)
        p.fd_stat = p.fd_statm = p.fd_io = p.fd_cmdline = p.fd_dir = -1
        for th in p.threads.values():
            self._close_thread(th)
        p.threads.clear()
        p.order, p.scheds, p.rows = [], None, None

    @staticmethod
    def _close_thread(th: _Thread) -> None:
        for fd in th.fds.values():
            os.close(fd)
        th.fds.clear()
        th.sched_fd = -1

    def _tread(self, p: _Proc, th: _Thread, name: str, size: int = 1024) -> bytes:
        fd = th.fds.get(name)
        if fd is None:
            path = f"{p.base}/task/{th.tid}/{name}"
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                if e.errno != errno.EMFILE:
                    raise
                if not self._fd_limit_raised:
                    self._fd_limit_raised = True
                    if _raise_fd_limit():
                        return self._tread(p, th, name, size)
                # Out of descriptors (huge targets): read without keeping it open.
                with open(path, "rb", buffering=0) as f:
                    return f.read(size)
            th.fds[name] = fd
        return os.pread(fd, size, 0)

    # -- sampling ------------------------------------------------------------

    def sample(
        self, p: _Proc, fd_kinds: dict[int, str], t_ns: int = 0
    ) -> tuple[ProcessRow, list[ThreadRow], bool]:
        # Fast path: did any thread run since the last sample?  Asked of
        # taskstats for big processes (root only), else one batched schedstat
        # read per thread (the loop runs in C: ~the syscall's cost each).  If
        # none did, nothing in the process can have changed state, counters,
        # threads or fds: the previous rows, the very same list, are reused.
        scheds: list[bytes] | None = None
        fp = p.fp
        idle = recheck = False
        if p.scheds is not None and not p.relist and p.rows is not None:
            if self._taskstats is not None and self.taskstats_checks(p):
                # Taken before any read: a thread running after it shows next time.
                fp = self._taskstats.tgid(p.pid)
                idle = fp is not None and fp == p.fp
            if not idle:
                try:
                    scheds = list(map(os.pread, p.sched_fds, _REPEAT_128, _REPEAT_0))
                except OSError:
                    scheds = None  # a thread went away: the full path sorts it out
                idle = scheds == p.scheds
            # A thread woken since its last sample but still waiting for a
            # CPU has not run: its schedstat has not moved, yet it is no
            # longer asleep.  That can only happen while CPUs are saturated.
            recheck = self.saturated and any(r[3] != "R" for r in p.rows)
            idle = idle and not recheck
        if idle:
            p.fp = fp
            if p.io_idx:
                self._reclassify_rows(p, fd_kinds)
            if p.skips < IDLE_REFRESH and p.prow is not None:
                p.skips += 1
                return p.prow, p.rows, False
        p.skips = 0
        if (
            scheds is not None
            and t_ns
            and t_ns - p.slow_ns < SLOW_COUNTER_NS
            and len(p.order) == 1
            and p.prow is not None
        ):
            res = self._sample_single(p, scheds[0], fd_kinds, t_ns)
            if res is not None:
                return res
        st = self._read_process(p, t_ns)
        if idle and st.num_threads == len(p.threads):
            # Now and then the process's own files anyway (see IDLE_REFRESH).
            p.prow = self._stat_row(p, st)
            return p.prow, p.rows, False
        if p.relist or st.num_threads != len(p.threads):
            self._relist(p)
            scheds = None
        fd_io = self.classify.fd_io
        rows: list[ThreadRow] = []
        io_idx: list[int] = []
        ran = False
        gone: list[int] = []
        pread = os.pread
        for i, th in enumerate(p.order):
            try:
                if scheds is not None:
                    sched = scheds[i]
                elif th.sched_fd >= 0:
                    sched = pread(th.sched_fd, 128, 0)
                else:
                    sched = self._tread(p, th, "schedstat", 128)
                    th.sched_fd = th.fds.get("schedstat", -1)
                row = th.row
                if sched == th.sched and row is not None and not (recheck and row[3] != "R"):
                    if row[5] in fd_io:
                        # Blocked in read/write: the fd scan may have learnt
                        # since what that fd is (numbers are reused at once).
                        row = th.row = self._reclassify(row, fd_kinds)
                        io_idx.append(len(rows))
                    rows.append(row)
                    continue
                ran = ran or sched != th.sched
                th.sched = sched
                row = th.row = self._thread_row(p, th, sched, row, fd_kinds, t_ns)
                if row[5] in fd_io:
                    io_idx.append(len(rows))
                rows.append(row)
            except OSError as e:
                if e.errno in _GONE:
                    gone.append(th.tid)
                else:
                    raise
            except (ValueError, IndexError):
                gone.append(th.tid)  # read a half-torn-down thread; next listing decides
        if gone:
            for tid in gone:
                self._close_thread(p.threads.pop(tid))
            p.relist = True
            ran = True
        prow = self._stat_row(p, st)
        old = p.rows
        if old is not None and len(old) == len(rows) and all(map(operator.is_, rows, old)):
            rows = old  # same rows: the writer sees the same list and stores it once
        p.rows, p.prow, p.io_idx, p.fp = rows, prow, io_idx, fp
        if p.relist or any(th.sched_fd < 0 for th in p.order):
            p.scheds = None  # (after a relist, rows and order may not line up)
        else:
            p.scheds = [th.sched for th in p.order]
            p.sched_fds = [th.sched_fd for th in p.order]
        return prow, rows, ran

    def _sample_single(
        self, p: _Proc, sched: bytes, fd_kinds: dict[int, str], t_ns: int
    ) -> tuple[ProcessRow, list[ThreadRow], bool] | None:
        """A process of one thread, its leader, that ran: one `stat` read, not two.

        The thread's `stat` carries the process's thread count, parent and
        state (the leader's) too, so the process's own `stat` is read only
        with its other slow counters (at most every SLOW_COUNTER_NS): only its
        CPU totals are carried in between.  None: take the full path (a new
        thread, an exit, a race), which reads everything again.
        """
        th = p.order[0]
        if th.tid != p.pid or sched == th.sched or p.prow is None:
            return None
        try:
            t = procfs.parse_stat(self._tread(p, th, "stat"))
            if t.num_threads != 1 or t.state in ("Z", "X"):
                return None  # the full path relists, or reads the final totals
            row = self._thread_row(p, th, sched, th.row, fd_kinds, t_ns, t)
        except (OSError, ValueError, IndexError):
            return None
        th.sched, th.row = sched, row
        prow = p.prow = self._process_row(p, t.ppid, 1, p.prow[4], p.prow[5])
        p.rows = [row]
        p.io_idx = [0] if row[5] in self.classify.fd_io else []
        p.scheds = [sched]
        return prow, p.rows, True

    def _read_process(self, p: _Proc, t_ns: int) -> procfs.Stat:
        try:
            st = procfs.parse_stat(_pread(p.fd_stat))
            due = t_ns - p.slow_ns >= SLOW_COUNTER_NS or not t_ns
            if due:
                p.slow_ns = t_ns
                p.rss = procfs.parse_statm_rss(_pread(p.fd_statm), self.page)
            # An exited process's last sample holds its final I/O totals,
            # however recently they were read (a zombie keeps them; its RSS
            # is gone, and the last one read is kept).
            if (due or st.state in ("Z", "X")) and p.fd_io >= 0:
                try:
                    p.io = procfs.parse_io(_pread(p.fd_io))
                except OSError:
                    pass
        except (OSError, ValueError, IndexError) as e:
            raise ProcessGone(p.pid) from e
        p.zombie = st.state in ("Z", "X")
        return st

    def _stat_row(self, p: _Proc, st: procfs.Stat) -> ProcessRow:
        tick = self.tick_ns
        return self._process_row(p, st.ppid, st.num_threads, st.utime * tick, st.stime * tick)

    @staticmethod
    def _process_row(
        p: _Proc, ppid: int, num_threads: int, user_ns: int, system_ns: int
    ) -> ProcessRow:
        io = p.io
        return (
            p.pid,
            ppid,
            num_threads,
            p.rss,
            user_ns,
            system_ns,
            io.read_chars,
            io.write_chars,
            io.read_bytes,
            io.write_bytes,
        )

    def _thread_row(
        self,
        p: _Proc,
        th: _Thread,
        sched: bytes,
        row: ThreadRow | None,
        fd_kinds: dict[int, str],
        t_ns: int,
        t: procfs.Stat | None = None,
    ) -> ThreadRow:
        """A new row for a thread that ran since its last sample (``t``: its stat, if read)."""
        if t is None:
            t = procfs.parse_stat(self._tread(p, th, "stat"))
        cpu_ns, delay_ns, pcount = procfs.parse_schedstat(sched)
        nr, arg0, wchan = -1, 0, ""
        state = t.state
        if state != "R":
            if self._can_syscall:
                try:
                    nr, arg0 = procfs.parse_syscall(self._tread(p, th, "syscall", 256))
                except PermissionError:
                    self._can_syscall = False
                    self.warn(
                        "/proc/TID/syscall is not readable (needs ptrace access): "
                        "wait reasons come from the wait channel only"
                    )
            before = _slept_as(th.slept, state, nr, arg0) if nr >= 0 and state != "D" else None
            if before is not None:
                # Back in a syscall on a first argument where it slept before
                # (a loop sleeping, a worker waiting on its queue, a thread
                # waiting for the GIL again after its turn): the same wait channel.
                wchan = before[7]
            else:
                wchan = procfs.parse_wchan(self._tread(p, th, "wchan", 128))
        if row is not None and (
            pcount == th.pcount or (t_ns and t_ns - th.status_ns < SLOW_COUNTER_NS)
        ):
            # Not scheduled in again since the last read (it was on a CPU all
            # along, so no switch happened), or read less than SLOW_COUNTER_NS
            # ago: carry the counts (`status` costs ~7 µs; they catch up later).
            vol, invol = row[12], row[13]
        else:
            vol, invol = procfs.parse_ctx_switches(self._tread(p, th, "status", 4096))
            th.pcount = pcount
            th.status_ns = t_ns
        wait = self.classify(state, nr, arg0, wchan, fd_kinds.get(arg0))
        new = (
            p.pid,
            th.tid,
            t.comm,
            state,
            wait,
            nr,
            arg0,
            wchan,
            t.utime * self.tick_ns,
            t.stime * self.tick_ns,
            cpu_ns,
            delay_ns,
            vol,
            invol,
            t.processor,
        )
        if state not in ("R", "D"):
            key = new[3], new[5], new[6]
            th.slept = (new, *(r for r in th.slept if (r[3], r[5], r[6]) != key))[:SLEPT_KEPT]
        return new

    def shutdown(self) -> None:
        if self._taskstats is not None:
            self._taskstats.close()
            self._taskstats = None

    def taskstats_checks(self, p: _Proc) -> bool:
        """Whether one taskstats request tells for less than the threads'
        schedstat reads if any of ``p``'s threads ran (root, and a process
        of TASKSTATS_MIN_THREADS or more)."""
        return self._taskstats is not None and len(p.order) >= TASKSTATS_MIN_THREADS

    def reclassify(self, p: _Proc, fd_kinds: dict[int, str]) -> None:
        """Before the C tick takes ``p``: the waits named after an fd's kind
        (read/write), which an fd scan may just have learnt, re-derived in
        its rows and in its threads' last asleep rows (the C tick never
        classifies; it reuses those)."""
        if p.io_idx:
            self._reclassify_rows(p, fd_kinds)
        fd_io = self.classify.fd_io
        for th in p.order:
            if any(r[5] in fd_io for r in th.slept):
                th.slept = tuple(self._reclassify(r, fd_kinds) for r in th.slept)

    def _reclassify_rows(self, p: _Proc, fd_kinds: dict[int, str]) -> None:
        """Idle path: re-derive the waits of threads blocked in read/write."""
        rows = p.rows
        assert rows is not None
        new = None
        for i in p.io_idx:
            row = self._reclassify(rows[i], fd_kinds)
            if row is not rows[i]:
                if new is None:
                    new = list(rows)
                new[i] = row
                p.order[i].row = row
        if new is not None:
            p.rows = new

    def _reclassify(self, row: ThreadRow, fd_kinds: dict[int, str]) -> ThreadRow:
        wait = self.classify(row[3], row[5], row[6], row[7], fd_kinds.get(row[6]))
        return row if wait == row[4] else (*row[:4], wait, *row[5:])

    def _relist(self, p: _Proc) -> None:
        try:
            tids = {int(t) for t in os.listdir(f"{p.base}/task")}
        except OSError:
            tids = set()
        for tid in list(p.threads):
            if tid not in tids:
                self._close_thread(p.threads.pop(tid))
        for tid in tids:
            if tid not in p.threads:
                p.threads[tid] = _Thread(tid)
        p.order = sorted(p.threads.values(), key=lambda th: th.tid)
        p.relist = False

    # -- fds -----------------------------------------------------------------

    def command(self, p: _Proc) -> bytes:
        try:
            return os.pread(p.fd_cmdline, 4096, 0)
        except OSError:
            return b""

    def fd_count(self, p: _Proc) -> int | None:
        # Since Linux 6.2 the size of /proc/PID/fd is the number of open fds:
        # one fstat (~1 µs) instead of listing the table.  0 on older kernels
        # (a live process always has some fd open... or none: then we scan).
        if p.fd_dir < 0:
            return None
        try:
            n = os.fstat(p.fd_dir).st_size
        except OSError:
            return None
        return n or None

    def fds(self, p: _Proc, known: dict[int, str]) -> dict[int, str] | None:
        d = f"{p.base}/fd/"
        try:
            names = os.listdir(d)
        except OSError:
            return None
        out: dict[int, str] = {}
        for n in names:
            fd = int(n)
            target = known.get(fd)
            if target is None:
                # Only numbers not in ``known`` are resolved: readlink costs
                # ~4 µs and a target may hold thousands of fds.  The sampler
                # passes an empty ``known`` now and then to catch reused numbers.
                try:
                    target = os.readlink(d + n)
                except OSError:
                    continue  # closed between listdir and readlink
            out[fd] = target
        return out

    def sockets(self, pid: int) -> dict[int, tuple[str, str, str]]:
        out: dict[int, tuple[str, str, str]] = {}
        for proto, v6 in (("tcp", False), ("tcp", True), ("udp", False), ("udp", True)):
            name = f"/proc/{pid}/net/{proto}{'6' if v6 else ''}"
            try:
                with open(name, "rb") as f:
                    out.update(procfs.parse_net_inet(f.read(), proto, v6))
            except OSError:
                pass
        try:
            with open(f"/proc/{pid}/net/unix", "rb") as f:
                out.update(procfs.parse_net_unix(f.read()))
        except OSError:
            pass
        return out

    # -- process tree --------------------------------------------------------

    def check_saturation(self) -> None:
        try:
            self.saturated = (
                procfs.parse_loadavg_running(os.pread(self._loadavg, 128, 0)) > self.ncpu
            )
        except (OSError, ValueError):
            self.saturated = False

    def fork_watch(self) -> tuple[int, int]:
        """(an open /proc/loadavg, the last pid new_children saw in it): the
        C loop skips new_children while that pid does not move, or moves
        over pids of no traced process (then it says so: ``forks_seen``)."""
        return self._loadavg, self._last_pid

    def forks_seen(self, last_pid: int) -> None:
        self._last_pid = last_pid

    def new_children(
        self,
        traced: set[int],
        exclude: set[int],
        adopter: int | None = None,
        own: Collection[int] = (),
    ) -> list[tuple[int, int]]:
        # /proc/loadavg names the last pid (or tid) the kernel handed out: if it
        # has not moved, nothing was forked anywhere and the /proc scan is skipped.
        last = procfs.parse_loadavg_last_pid(os.pread(self._loadavg, 128, 0))
        if last == self._last_pid:
            return []
        first = self._last_pid + 1
        if last < self._last_pid:
            self._foreign.clear()  # pid numbers wrapped: old verdicts may be stale
        self._last_pid = last
        if 0 < first <= last < first + PID_PROBE_MAX:
            # Few pids handed out since: look at just those (listing /proc
            # costs ~50-100 µs on a busy machine).  They may be thread ids;
            # those are told apart below.
            candidates = [str(pid) for pid in range(first, last + 1)]
        else:
            candidates = os.listdir("/proc")
        parents: dict[int, int] = {}
        for name in candidates:
            if not name.isdigit():
                continue
            pid = int(name)
            if pid in traced or pid in self._foreign or pid in exclude:
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    ppid = procfs.parse_stat(f.read()).ppid
            except (OSError, ValueError, IndexError):
                continue
            # A thread's stat names its process's parent: a thread of a
            # traced child would pass for a new child of the traced parent.
            if (ppid in traced or ppid in exclude) and not _is_process(pid):
                self._foreign.add(pid)
                continue
            parents[pid] = ppid
        found: list[tuple[int, int]] = []
        known = set(traced)
        if adopter is not None:
            for pid, ppid in list(parents.items()):
                if ppid == adopter and pid not in own:  # an orphan of the traced tree
                    found.append((pid, ppid))
                    known.add(pid)
                    del parents[pid]
        # Grandchildren forked between two samples: iterate to a fixed point.
        changed = True
        while changed:
            changed = False
            for pid, ppid in list(parents.items()):
                if ppid in known and ppid not in exclude:
                    found.append((pid, ppid))
                    known.add(pid)
                    del parents[pid]
                    changed = True
        for pid, ppid in parents.items():
            if ppid in exclude:
                exclude.add(pid)  # py-spy's or the agent's own children
            else:
                self._foreign.add(pid)
        return found

    def info(self, pid: int) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": pid, "ppid": -1, "name": "", "exe": "", "cmdline": []}
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                st = procfs.parse_stat(f.read())
            out["ppid"], out["name"] = st.ppid, st.comm
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
            out["cmdline"] = [a.decode("utf-8", procfs.NAME_ERRORS) for a in raw.split(b"\0") if a]
        except (OSError, ValueError, IndexError):
            pass
        try:
            out["exe"] = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            pass
        return out


# -------------------------------------------------------------------- psutil


class PsutilBackend(Backend):
    """Portable sampling through psutil (one call per thread: ~20x the cost)."""

    name = "psutil"

    def __init__(self) -> None:
        super().__init__()
        import psutil

        self.psutil = psutil
        self._per_thread = hasattr(psutil, "Process") and os.path.isdir("/proc/self/task")

    def open(self, pid: int) -> Any:
        try:
            return self.psutil.Process(pid)
        except self.psutil.Error as e:
            raise ProcessGone(pid) from e

    def close(self, handle: Any) -> None:
        pass

    _STATES = {
        "running": "R",
        "sleeping": "S",
        "disk-sleep": "D",
        "stopped": "T",
        "tracing-stop": "t",
        "zombie": "Z",
        "dead": "X",
        "idle": "I",
    }

    def sample(
        self, proc: Any, fd_kinds: dict[int, str], t_ns: int = 0
    ) -> tuple[ProcessRow, list[ThreadRow], bool]:
        ps = self.psutil
        try:
            with proc.oneshot():
                ppid = proc.ppid()
                ct = proc.cpu_times()
                mem = proc.memory_info()
                threads = proc.threads()
                pstate = self._STATES.get(proc.status(), "?")
                proc.zombie = pstate in ("Z", "X")
                try:
                    io = proc.io_counters()
                    iot = (
                        getattr(io, "read_chars", 0),
                        getattr(io, "write_chars", 0),
                        io.read_bytes,
                        io.write_bytes,
                    )
                except (ps.AccessDenied, AttributeError):
                    iot = (0, 0, 0, 0)
        except ps.Error as e:
            raise ProcessGone(proc.pid) from e
        rows: list[ThreadRow] = []
        for t in threads:
            name, state, vol, invol, cpu = "", pstate, 0, 0, -1
            if self._per_thread:
                try:
                    tp = ps.Process(t.id)
                    with tp.oneshot():
                        name = tp.name()
                        state = self._STATES.get(tp.status(), "?")
                        vol, invol = tp.num_ctx_switches()
                        cpu = tp.cpu_num()
                except ps.Error:
                    continue
            user_ns, sys_ns = round(t.user_time * 1e9), round(t.system_time * 1e9)
            wait = self.classify(state, -1, 0, "", None)
            rows.append(
                (
                    proc.pid,
                    t.id,
                    name,
                    state,
                    wait,
                    -1,
                    0,
                    "",
                    user_ns,
                    sys_ns,
                    user_ns + sys_ns,
                    -1,
                    vol,
                    invol,
                    cpu,
                )
            )
        prow = (
            proc.pid,
            ppid,
            len(threads),
            mem.rss,
            round(ct.user * 1e9),
            round(ct.system * 1e9),
            *iot,
        )
        return prow, rows, True

    def command(self, proc: Any) -> bytes:
        try:
            return "\0".join(proc.cmdline()).encode()
        except self.psutil.Error:
            return b""

    def fds(self, proc: Any, known: dict[int, str]) -> dict[int, str] | None:
        ps = self.psutil
        out: dict[int, str] = {}
        try:
            n = proc.num_fds()
            for f in proc.open_files():
                out[f.fd] = f.path
            for c in proc.net_connections(kind="all"):
                if c.fd >= 0:
                    out[c.fd] = "socket:[?]"
        except ps.Error:
            return None
        # psutil does not name pipes, epoll or devices: count them as unnamed.
        for i in range(max(0, n - len(out))):
            out[-1 - i] = "?"
        return out

    def sockets(self, pid: int) -> dict[int, tuple[str, str, str]]:
        return {}

    def new_children(
        self,
        traced: set[int],
        exclude: set[int],
        adopter: int | None = None,
        own: Collection[int] = (),
    ) -> list[tuple[int, int]]:
        ps = self.psutil
        found: list[tuple[int, int]] = []
        for pid in [*traced, *([adopter] if adopter is not None else [])]:
            try:
                kids = ps.Process(pid).children()
            except ps.Error:
                continue
            for k in kids:
                if k.pid in traced or k.pid in exclude or (pid == adopter and k.pid in own):
                    continue
                found.append((k.pid, pid))
        return found

    def info(self, pid: int) -> dict[str, Any]:
        ps = self.psutil
        out: dict[str, Any] = {"pid": pid, "ppid": -1, "name": "", "exe": "", "cmdline": []}
        try:
            p = ps.Process(pid)
            out.update(ppid=p.ppid(), name=p.name(), cmdline=p.cmdline())
            out["exe"] = p.exe()
        except ps.Error:
            pass
        return out


BACKENDS = {"proc": ProcBackend, "psutil": PsutilBackend}


def make_backend(name: str) -> Backend:
    if name == "auto":
        name = "proc" if os.path.exists("/proc/self/schedstat") else "psutil"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    return BACKENDS[name]()
