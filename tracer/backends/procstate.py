"""What the /proc backend keeps of each process and thread between samples.

A :class:`ProcHandle` is the handle the sampler holds for a process; the C
tick is loaded from it and hands its state back into it
(tracer/backends/fasttick.py).
"""

from __future__ import annotations

from .. import procfs
from .base import ProcessRow, ThreadRow

# Counters that are cumulative or slow-moving (RSS, I/O bytes, a thread's
# context switches) are re-read at most this often (50 Hz) and carried in
# between: their files (`status` ~10-19 µs of kernel time per thread on this
# VM) would otherwise dominate the sample of a thread that ran.
SLOW_COUNTER_NS = 20_000_000


class ThreadState:
    """What the backend keeps of one thread between samples."""

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


class ProcHandle:
    """What the backend keeps of one process between samples (its handle)."""

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
        self.threads: dict[int, ThreadState] = {}
        self.relist = True
        self.fd_stat = -1
        self.fd_statm = -1
        self.fd_io = -1
        self.fd_cmdline = -1
        self.fd_dir = -1  # /proc/PID/fd, for its size: the number of open fds
        self.zombie = False  # exited, not yet reaped: its last sample holds the totals
        # The idle fast path (see ProcBackend.sample): the threads in a fixed
        # order, their schedstat fds and last lines, the last rows and row list.
        self.order: list[ThreadState] = []
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


SLEPT_KEPT = 4  # rows in ThreadState.slept


def slept_as(slept: tuple[ThreadRow, ...], state: str, nr: int, arg0: int) -> ThreadRow | None:
    """The row of ``slept`` asleep in syscall ``nr`` on ``arg0`` in ``state``, if any."""
    for row in slept:
        if row.state == state and row.syscall == nr and row.arg0 == arg0:
            return row
    return None
