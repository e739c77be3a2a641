"""The /proc backend's steady-state tick in C (tracer/backends/_fasttick.c).

The sampler gets a :class:`FastPath` writing to its sink from its backend
(``fast_path(sink)``) and, after sampling a process on the Python path,
offers it the process (:meth:`FastPath.load`).  The C tick then samples the
processes it holds (``tick``, and :meth:`~FastPath.burst`, which sleeps
between ticks too) and hands back those the Python path must take for a
tick; they start from what C last read (:meth:`~FastPath.sync`).  This module is the
seam between the two: it alone knows both the backend's per-process state
(:class:`~.proc.ProcHandle`) and what C takes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..fdscan import CHECK_MIN_NS, FdSchedule, FdTable
from ..schema import GIL_FIELDS
from .base import ProcessRow, ThreadRow
from .proc import IDLE_REFRESH
from .procstate import SLOW_COUNTER_NS, ProcHandle
from .proctree import PID_PROBE_MAX

if TYPE_CHECKING:
    from ..gilstate import GilReader
    from ..sink import Sink
    from .proc import ProcBackend

# What FastTick takes and returns; a module built from another version of
# the C source says another number and is not used.
API = 7

# A process the C tick hands back this many samples in a row goes back to
# the Python path for a while before it is tried again: FAST_RETRY_MIN_NS,
# doubled each time it happens again within FAST_RETRY_NS, up to that.  (A
# flat second kept short jobs out of C for good: a starting interpreter's fd
# table changes at every sample while it imports, three hand-backs in a row.)
FAST_MAX_BACKS = 3
FAST_RETRY_MIN_NS = 40_000_000
FAST_RETRY_NS = 1_000_000_000
# A process taskstats can check for less (root, TASKSTATS_MIN_THREADS or
# more threads) goes to the C tick only while its threads run, and back to
# the Python path after this many samples in a row where none ran.
TASKSTATS_IDLE_BACK = 3


class Burst(NamedTuple):
    """What FastPath.burst did (see FastTick.burst in the C source)."""

    done: int  # ticks taken
    missed: int  # deadlines missed
    deadline: int
    last: int  # the time of the last tick taken
    ran: set[int]  # pids that ran in any of them
    rows: int  # thread rows emitted
    ran_flag: bool
    next_child_scan: int
    pending: int  # the time of a tick Python must do (whole or finish), or 0
    back: list[int] | None  # None: the whole tick (a pid was handed out)
    scan: list[int]  # sampled in the last tick, with an fd look due (FastPath.looked)


def _module() -> Any:
    """The C module, or None (no compiler at install, not Linux, built from
    other sources, or CIRCUIT_PYTHON_TICK=1 to take the Python path)."""
    if os.environ.get("CIRCUIT_PYTHON_TICK"):
        return None
    try:
        from . import _fasttick  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _fasttick if getattr(_fasttick, "API", 0) == API else None


def _places(fields: Sequence[str], filled: Sequence[str], what: str) -> tuple[int, ...]:
    """Where each field C fills (``filled``, in its order) goes in a row of
    ``fields``; C must fill every field of the row."""
    if sorted(filled) != sorted(fields):
        raise ValueError(f"the C tick fills {what} fields {filled}, the schema has {fields}")
    return tuple(fields.index(f) for f in filled)


def _gil_args(reader: GilReader) -> tuple[int, int, int, int]:
    """What the C tick needs to read a process's GIL as GilReader.read does."""
    lay = reader.layout
    pthread = -1 if lay.pthread_tid_offset is None else lay.pthread_tid_offset
    return reader.fd, lay.gil_addr, lay.tid_offset, pthread


class FastPath:
    """The C tick of one ProcBackend, and which processes it holds."""

    @classmethod
    def open(cls, backend: ProcBackend, sink: Sink) -> FastPath | None:
        module = _module()
        if module is None:
            return None
        try:
            return cls(backend, module, sink)
        except ValueError as e:  # the schema has a column the C tick does not fill
            backend.warn(f"the C tick is not used: {e}")
            return None

    def __init__(self, backend: ProcBackend, module: Any, sink: Sink) -> None:
        self.backend = backend
        gil_fields = [c for c, _ in GIL_FIELDS]
        self.c = module.FastTick(
            backend.tick_ns,
            backend.page,
            SLOW_COUNTER_NS,
            IDLE_REFRESH,
            CHECK_MIN_NS,
            backend.classify("R", -1, 0, "", None),
            PID_PROBE_MAX,
            (ThreadRow, ProcessRow),
            (
                _places(ThreadRow._fields, module.THREAD_FIELDS, "thread"),
                _places(ProcessRow._fields, module.PROCESS_FIELDS, "process"),
                _places(gil_fields, module.GIL_FIELDS, "gil"),
            ),
            backend.fork_watch()[0],
            backend.ncpu,
            backend.classify,
        )
        self.c.bind(*sink.tick_buffers())
        # tick(t_ns): sample the processes C holds into the sink at t_ns;
        # (the pids that ran, the pids handed back for the Python path,
        # thread rows, the pids sampled whose fd look is due).  The C method
        # itself: a Python frame per tick costs several µs on the caches a
        # sleep left cold.
        self.tick: Callable[[int], tuple[list[int], list[int], int, list[int]]] = self.c.tick
        self.loaded: set[int] = set()  # the pids C holds
        self.fd_io: set[int] = set(backend.classify.fd_io)  # waits named by an fd's kind
        # pid -> (sample number of its last hand-back, hand-backs in a row);
        # pid -> when to try the C tick again; pid -> (last wait, when).
        self.backs: dict[int, tuple[int, int]] = {}
        self.retry: dict[int, int] = {}
        self.waits: dict[int, tuple[int, int]] = {}

    # -- which processes C holds --------------------------------------------

    def load(
        self,
        p: ProcHandle,
        ran: bool,
        table: FdTable,
        schedule: FdSchedule,
        python_at: int,
        gil: GilReader | None,
    ) -> None:
        """Hand ``p`` to C after a Python sample (in which it ``ran`` or
        not), if C can take it; ``python_at``: when the Python path has work
        due for it (0: none)."""
        b = self.backend
        big = b.taskstats_checks(p)
        if (
            p.zombie
            or p.relist
            or p.rows is None
            or p.prow is None
            or p.scheds is None
            or len(p.rows) != len(p.order)
            or (big and not ran)
        ):
            self.unload(p.pid)  # (taskstats checks a big idle process for less)
            return
        b.reclassify(p, table.kinds)
        threads = [
            (
                th.tid,
                th.sched_fd,
                th.fds.get("stat", -1),
                th.fds.get("status", -1),
                th.fds.get("syscall", -1),
                th.fds.get("wchan", -1),
                th.sched,
                th.row,
                th.slept,
                th.pcount,
                th.status_ns,
            )
            for th in p.order
        ]
        self.c.load(
            p.pid,
            (p.fd_stat, p.fd_statm, p.fd_io, p.fd_dir),
            threads,
            p.prow,
            p.rows,
            tuple(p.io),
            (p.slow_ns, p.rss, p.skips, TASKSTATS_IDLE_BACK if big else 0),
            table.counts,
            schedule.for_c(),
            python_at,
            None if gil is None else _gil_args(gil),
            table.kinds,
        )
        self.loaded.add(p.pid)

    def looked(self, pid: int, table: FdTable, schedule: FdSchedule, changed: set[int]) -> bool:
        """After the fd look C asked for: give it the table's new counts and
        the schedule.  False when that is not enough (a thread waits in
        read/write on a fd of ``changed``, whose kind its wait may name):
        then sync and load the process again, which reclassifies."""
        return self.c.looked(pid, table.counts, schedule.for_c(), self.fd_io, changed)

    def unload(self, pid: int) -> None:
        """Take ``pid`` back to the Python path (until it is loaded again)."""
        self.c.drop(pid)
        self.loaded.discard(pid)

    def forget(self, pid: int) -> None:
        """``pid`` is no longer traced."""
        self.unload(pid)
        self.backs.pop(pid, None)
        self.retry.pop(pid, None)
        self.waits.pop(pid, None)

    def may_load(self, pid: int, t_ns: int) -> bool:
        """Whether ``pid`` may go to C at ``t_ns`` (it is not set aside)."""
        return t_ns >= self.retry.get(pid, 0)

    def handed_back(self, back: list[int], sample: int, t_ns: int) -> None:
        """Note the pids C handed back at sample number ``sample``.

        A process handed back on every sample (threads that sleep again
        after running: GIL contention, I/O) would cost a C attempt and a
        reload each time: it stays on the Python path for a while.
        """
        for pid in back:
            last, streak = self.backs.get(pid, (-2, 0))
            streak = streak + 1 if last == sample - 1 else 1
            self.backs[pid] = (sample, streak)
            if streak >= FAST_MAX_BACKS:
                wait, when = self.waits.get(pid, (0, 0))
                recent = t_ns - when < FAST_RETRY_NS + wait
                wait = min(2 * wait, FAST_RETRY_NS) if recent and wait else FAST_RETRY_MIN_NS
                self.waits[pid] = (wait, t_ns)
                self.retry[pid] = t_ns + wait
                self.unload(pid)

    def sync(self, p: ProcHandle, schedule: FdSchedule) -> None:
        """Before the Python path samples a process C handed back: start
        from what C last read and emitted.  Its threads that did not run
        since keep their rows (the same objects, stored once by the writer)
        instead of being read again, and the counters read every
        SLOW_COUNTER_NS carry on from C's latest values."""
        state = self.c.state(p.pid)
        if state is None:
            return
        prow, rows, (slow_ns, rss, skips), io, threads, (scan_at, count_at) = state
        if len(threads) != len(p.order):
            return  # (cannot happen: loaded from p.order, reloaded after each relist)
        p.prow, p.rows, p.slow_ns, p.rss, p.skips = prow, rows, slow_ns, rss, skips
        p.io = type(p.io)(*io)
        p.scheds = [sched for sched, _, _, _ in threads]
        for th, row, (sched, pcount, status_ns, slept) in zip(p.order, rows, threads, strict=True):
            th.row, th.sched, th.pcount, th.status_ns = row, sched, pcount, status_ns
            if slept is not None:
                th.slept = slept  # (C adds the rows of threads asleep somewhere new)
        # (C emits rows asleep in read/write too: the idle path reclassifies
        # those when an fd scan learns their fd's kind.)
        fd_io = self.backend.classify.fd_io
        p.io_idx = [i for i, row in enumerate(rows) if row.syscall in fd_io]
        schedule.scan_at, schedule.count_at = scan_at, count_at

    # -- sampling (and tick, above) -----------------------------------------

    def burst(
        self,
        deadline: int,
        period: int,
        until: int,
        signals: tuple[int, ...],
        watch_fd: int,
        exclude: set[int],
        ran_flag: bool,
        next_child_scan: int,
    ) -> Burst:
        """Sleep to each deadline and tick, in C, until Python is needed
        (see FastTick.burst in the C source)."""
        loadavg, last_pid = self.backend.fork_watch()
        *got, last_pid = self.c.burst(
            deadline,
            period,
            until,
            signals,
            watch_fd,
            loadavg,
            last_pid,
            exclude,
            ran_flag,
            next_child_scan,
        )
        self.backend.forks_seen(last_pid)
        return Burst(*got)
