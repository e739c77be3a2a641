"""The /proc backend (Linux): every number from files under /proc.

It keeps every /proc file it needs open and re-reads it with ``pread``.  A
thread whose ``schedstat`` line did not change since the last sample has not
been on a CPU since, so its state, syscall and counters cannot have changed
either: its previous row is reused, for one ~1 µs read instead of five.

Its steady-state tick also runs in C (tracer/backends/_fasttick.c, driven
by :class:`~circuit.tracer.backends.fasttick.FastPath`), from the state
kept here; this Python path stays the reference.  The process tree and fd
tables, off the per-sample path, are in :mod:`.proctree`.
"""

from __future__ import annotations

import errno
import operator
import os
from collections.abc import Collection
from itertools import repeat
from typing import TYPE_CHECKING, Any

from .. import procfs
from ..sockdiag import Sock, SocketLookup
from ..taskstats import TaskStats
from . import proctree
from .base import Backend, ProcessGone, ProcessRow, ThreadRow, new_row
from .procstate import SLEPT_KEPT, SLOW_COUNTER_NS, ProcHandle, ThreadState, slept_as

if TYPE_CHECKING:
    from ..sink import Sink
    from .fasttick import FastPath

_GONE = (errno.ESRCH, errno.ENOENT)

# A process none of whose threads ran is not re-read (its row is reused);
# this many such samples in a row and it is re-read anyway, for what can
# change without it running: its parent (reparenting), RSS (reclaim).
IDLE_REFRESH = 50
# Processes with at least this many threads are first asked through taskstats
# (root only) whether any thread ran: one ~7 µs request instead of a read per thread.
TASKSTATS_MIN_THREADS = 8

_REPEAT_128 = repeat(128)  # pread's size and offset for map(): endless, shared
_REPEAT_0 = repeat(0)


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
        self._children = proctree.ChildFinder(self._loadavg)
        self._can_syscall = True
        self._can_io = True
        self._fd_limit_raised = False
        self._taskstats = TaskStats.open() if taskstats else None
        self._sockets = SocketLookup()

    # -- handles -------------------------------------------------------------

    def open(self, pid: int) -> ProcHandle:
        p = ProcHandle(pid)
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

    def close(self, p: ProcHandle) -> None:
        self._sockets.forget(p.pid)
        for fd in (p.fd_stat, p.fd_statm, p.fd_io, p.fd_cmdline, p.fd_dir):
            if fd >= 0:
                os.close(fd)
        p.fd_stat = p.fd_statm = p.fd_io = p.fd_cmdline = p.fd_dir = -1
        for th in p.threads.values():
            self._close_thread(th)
        p.threads.clear()
        p.order, p.scheds, p.rows = [], None, None

    @staticmethod
    def _close_thread(th: ThreadState) -> None:
        for fd in th.fds.values():
            os.close(fd)
        th.fds.clear()
        th.sched_fd = -1

    def _tread(self, p: ProcHandle, th: ThreadState, name: str, size: int = 1024) -> bytes:
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
                    if proctree.raise_fd_limit():
                        return self._tread(p, th, name, size)
                # Out of descriptors (huge targets): read without keeping it open.
                with open(path, "rb", buffering=0) as f:
                    return f.read(size)
            th.fds[name] = fd
        return os.pread(fd, size, 0)

    # -- sampling ------------------------------------------------------------

    def sample(
        self, p: ProcHandle, fd_kinds: dict[int, str], t_ns: int = 0
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
            recheck = self.saturated and any(r.state != "R" for r in p.rows)
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
                if sched == th.sched and row is not None and not (recheck and row.state != "R"):
                    if row.syscall in fd_io:
                        # Blocked in read/write: the fd scan may have learnt
                        # since what that fd is (numbers are reused at once).
                        row = th.row = self._reclassify(row, fd_kinds)
                        io_idx.append(len(rows))
                    rows.append(row)
                    continue
                ran = ran or sched != th.sched
                th.sched = sched
                row = th.row = self._thread_row(p, th, sched, row, fd_kinds, t_ns)
                if row.syscall in fd_io:
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
        self, p: ProcHandle, sched: bytes, fd_kinds: dict[int, str], t_ns: int
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
        prow = p.prow = self._process_row(
            p,
            t.ppid,
            1,
            p.prow.user_ns,
            p.prow.system_ns,
            t.cutime * self.tick_ns,
            t.cstime * self.tick_ns,
        )
        p.rows = [row]
        p.io_idx = [0] if row.syscall in self.classify.fd_io else []
        p.scheds = [sched]
        return prow, p.rows, True

    def _read_process(self, p: ProcHandle, t_ns: int) -> procfs.Stat:
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

    def _stat_row(self, p: ProcHandle, st: procfs.Stat) -> ProcessRow:
        tick = self.tick_ns
        return self._process_row(
            p,
            st.ppid,
            st.num_threads,
            st.utime * tick,
            st.stime * tick,
            st.cutime * tick,
            st.cstime * tick,
        )

    @staticmethod
    def _process_row(
        p: ProcHandle,
        ppid: int,
        num_threads: int,
        user_ns: int,
        system_ns: int,
        children_user_ns: int,
        children_system_ns: int,
    ) -> ProcessRow:
        io = p.io
        return new_row(
            ProcessRow,
            (
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
                children_user_ns,
                children_system_ns,
            ),
        )

    def _thread_row(
        self,
        p: ProcHandle,
        th: ThreadState,
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
        if state != "R" and self._can_syscall:
            try:
                data = self._tread(p, th, "syscall", 256)
                nr, arg0 = procfs.parse_syscall(data)
                if data.startswith(b"running") and state not in ("Z", "X"):
                    # Woken since its stat was read: awake at this sample,
                    # not asleep in no syscall (the C tick does the same).
                    state = "R"
            except PermissionError:
                self._can_syscall = False
                self.warn(
                    "/proc/TID/syscall is not readable (needs ptrace access): "
                    "wait reasons come from the wait channel only"
                )
        if state != "R":
            before = slept_as(th.slept, state, nr, arg0) if nr >= 0 and state != "D" else None
            if before is not None:
                # Back in a syscall on a first argument where it slept before
                # (a loop sleeping, a worker waiting on its queue, a thread
                # waiting for the GIL again after its turn): the same wait channel.
                wchan = before.wchan
            else:
                wchan = procfs.parse_wchan(self._tread(p, th, "wchan", 128))
        if row is not None and (
            pcount == th.pcount or (t_ns and t_ns - th.status_ns < SLOW_COUNTER_NS)
        ):
            # Not scheduled in again since the last read (it was on a CPU all
            # along, so no switch happened), or read less than SLOW_COUNTER_NS
            # ago: carry the counts (`status` costs ~7 µs; they catch up later).
            vol, invol = row.ctx_vol, row.ctx_invol
        else:
            vol, invol = procfs.parse_ctx_switches(self._tread(p, th, "status", 4096))
            th.pcount = pcount
            th.status_ns = t_ns
        wait = self.classify(state, nr, arg0, wchan, fd_kinds.get(arg0))
        new = new_row(
            ThreadRow,
            (
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
            ),
        )
        if state not in ("R", "D"):
            th.slept = (
                new,
                *(r for r in th.slept if (r.state, r.syscall, r.arg0) != (state, nr, arg0)),
            )[:SLEPT_KEPT]
        return new

    def fast_path(self, sink: Sink) -> FastPath | None:
        from .fasttick import FastPath  # (it builds on this module)

        return FastPath.open(self, sink)

    def shutdown(self) -> None:
        self._sockets.close()
        if self._taskstats is not None:
            self._taskstats.close()
            self._taskstats = None

    def taskstats_checks(self, p: ProcHandle) -> bool:
        """Whether one taskstats request tells for less than the threads'
        schedstat reads if any of ``p``'s threads ran (root, and a process
        of TASKSTATS_MIN_THREADS or more)."""
        return self._taskstats is not None and len(p.order) >= TASKSTATS_MIN_THREADS

    def reclassify(self, p: ProcHandle, fd_kinds: dict[int, str]) -> None:
        """Before the C tick takes ``p``: the waits named after an fd's kind
        (read/write), which an fd scan may just have learnt, re-derived in
        its rows and in its threads' last asleep rows (the C tick never
        classifies; it reuses those)."""
        if p.io_idx:
            self._reclassify_rows(p, fd_kinds)
        fd_io = self.classify.fd_io
        for th in p.order:
            if any(r.syscall in fd_io for r in th.slept):
                th.slept = tuple(self._reclassify(r, fd_kinds) for r in th.slept)

    def _reclassify_rows(self, p: ProcHandle, fd_kinds: dict[int, str]) -> None:
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
        wait = self.classify(row.state, row.syscall, row.arg0, row.wchan, fd_kinds.get(row.arg0))
        return row if wait == row.wait else row._replace(wait=wait)

    def _relist(self, p: ProcHandle) -> None:
        try:
            tids = {int(t) for t in os.listdir(f"{p.base}/task")}
        except OSError:
            tids = set()
        for tid in list(p.threads):
            if tid not in tids:
                self._close_thread(p.threads.pop(tid))
        for tid in tids:
            if tid not in p.threads:
                p.threads[tid] = ThreadState(tid)
        p.order = sorted(p.threads.values(), key=lambda th: th.tid)
        p.relist = False

    # -- fds and the process tree (tracer/backends/proctree.py) ---------------

    def command(self, p: ProcHandle) -> bytes:
        try:
            return os.pread(p.fd_cmdline, 4096, 0)
        except OSError:
            return b""

    def fd_count(self, p: ProcHandle) -> int | None:
        return proctree.count_fds(p.fd_dir)

    def fds(self, p: ProcHandle, known: dict[int, str]) -> dict[int, str] | None:
        return proctree.list_fds(p.base, known)

    def sockets(self, pid: int, fds: dict[int, int]) -> dict[int, Sock]:
        return self._sockets.resolve(pid, fds)

    def info(self, pid: int) -> dict[str, Any]:
        return proctree.process_info(pid)

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
        return self._children.loadavg, self._children.last_pid

    def forks_seen(self, last_pid: int) -> None:
        self._children.last_pid = last_pid

    def new_children(
        self,
        traced: set[int],
        exclude: set[int],
        adopter: int | None = None,
        own: Collection[int] = (),
    ) -> list[tuple[int, int]]:
        return self._children.new_children(traced, exclude, adopter, own)
