"""The sampling loop: walk the traced process tree, emit rows, keep time.

Runs in circuit's own process (``circuit run`` / ``attach``) or in a helper
process (``circuit.trace()``), never inside the target.  Everything on the
per-sample path is plain Python on pre-opened files; the heavy work (Arrow
conversion, Parquet) happens at flush time, once a second.
"""

from __future__ import annotations

import resource
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .backends import Backend, ProcessGone
from .procfs import FD_KINDS, fd_kind, link_inode
from .writer import RunWriter

FLUSH_INTERVAL_S = 1.0
# fd scanning is throttled per process so it uses at most ~1/FD_BUDGET of the
# wall clock: a target with 10,000 fds costs ~8 ms to list, so it is listed
# every ~80 ms instead of every sample (its counts are carried in between).
FD_BUDGET = 10


@dataclass
class _Traced:
    pid: int
    handle: object
    fds: dict[int, str] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    counts: tuple[int, ...] = (0,) * (len(FD_KINDS) + 1)
    next_fd_scan: int = 0
    first: bool = True
    comm: str = ""


class Sampler:
    def __init__(
        self,
        backend: Backend,
        writer: RunWriter,
        root_pid: int,
        exclude: set[int] | None = None,
        fds: bool = True,
    ) -> None:
        self.backend = backend
        self.writer = writer
        self.root_pid = root_pid
        self.exclude = set(exclude or ())
        self.scan_fds = fds
        self.traced: dict[int, _Traced] = {}
        self.seen: set[int] = set()
        self.samples = 0
        self.thread_samples = 0
        self.period_ns = 10_000_000
        self._add(root_pid, -1, time.monotonic_ns(), root=True)

    # -- tree ----------------------------------------------------------------

    def _add(self, pid: int, ppid: int, t_ns: int, root: bool = False) -> None:
        if pid in self.seen:
            return
        try:
            handle = self.backend.open(pid)
        except ProcessGone:
            return
        self.seen.add(pid)
        self.traced[pid] = _Traced(pid, handle)
        self._record_info(pid, ppid, t_ns, root)

    def _record_info(self, pid: int, ppid: int, t_ns: int, root: bool) -> None:
        info = self.backend.info(pid)
        self.writer.add(
            "procs",
            (
                t_ns,
                pid,
                info["ppid"] if info["ppid"] >= 0 else ppid,
                info["name"],
                info["exe"],
                shlex.join(info["cmdline"]),
                root,
            ),
        )

    def _drop(self, tr: _Traced) -> None:
        self.backend.close(tr.handle)
        del self.traced[tr.pid]

    @property
    def alive(self) -> bool:
        return self.root_pid in self.traced

    # -- one sample ----------------------------------------------------------

    def tick(self, t_ns: int) -> None:
        if self.traced:
            for pid, ppid in self.backend.new_children(set(self.traced), self.exclude):
                self._add(pid, ppid, t_ns)
        writer = self.writer
        for tr in list(self.traced.values()):
            try:
                prow, rows, _ran = self.backend.sample(tr.handle, tr.kinds)
            except ProcessGone:
                self._drop(tr)
                continue
            comm = getattr(tr.handle, "comm", "")
            if comm != tr.comm:
                if tr.comm:  # the process exec'd another program: record its new command line
                    self._record_info(tr.pid, prow[1], t_ns, tr.pid == self.root_pid)
                tr.comm = comm
            if self.scan_fds and t_ns >= tr.next_fd_scan:
                self._scan_fds(tr, t_ns)
            writer.add("processes", (t_ns, *prow, *tr.counts))
            if rows:
                writer.add_threads(t_ns, rows)
                self.thread_samples += len(rows)
        self.samples += 1

    def _scan_fds(self, tr: _Traced, t_ns: int) -> None:
        c0 = time.monotonic_ns()
        new = self.backend.fds(tr.handle, tr.fds)
        if new is None:
            tr.next_fd_scan = t_ns + 1_000_000_000  # unreadable: retry once a second
            return
        old = tr.fds
        opened = [fd for fd in new if fd not in old]
        closed = [fd for fd in old if fd not in new]
        kinds = tr.kinds
        if opened:
            socks: dict[int, tuple[str, str, str]] | None = None
            for fd in sorted(opened):
                target = new[fd]
                kind = fd_kind(target)
                kinds[fd] = kind
                if fd < 0:
                    continue  # counted but not named (psutil)
                proto = local = remote = ""
                if kind == "socket":
                    if socks is None:
                        socks = self.backend.sockets(tr.pid)
                    proto, local, remote = socks.get(link_inode(target), ("", "", ""))
                self.writer.add(
                    "fds", (t_ns, tr.pid, fd, "open", kind, target, proto, local, remote, tr.first)
                )
        for fd in closed:
            kind = kinds.pop(fd, "other")
            if fd >= 0:
                self.writer.add(
                    "fds", (t_ns, tr.pid, fd, "close", kind, old[fd], "", "", "", False)
                )
        tr.fds = new
        tr.first = False
        if opened or closed:
            by_kind = dict.fromkeys(FD_KINDS, 0)
            for k in kinds.values():
                by_kind[k] += 1
            tr.counts = (len(new), *by_kind.values())
        cost = time.monotonic_ns() - c0
        tr.next_fd_scan = t_ns + max(self.period_ns, cost * FD_BUDGET)

    def close(self) -> None:
        for tr in list(self.traced.values()):
            self._drop(tr)


@dataclass
class LoopStats:
    samples: int = 0
    missed: int = 0
    first_ns: int = 0
    last_ns: int = 0
    cpu_s: float = 0.0

    @property
    def achieved_hz(self) -> float:
        span = (self.last_ns - self.first_ns) / 1e9
        return (self.samples - 1) / span if self.samples > 1 and span > 0 else 0.0


def run_loop(
    sampler: Sampler,
    rate_hz: float,
    wait: Callable[[float], bool],
    on_tick: Callable[[int], None] | None = None,
) -> LoopStats:
    """Sample at ``rate_hz`` until ``wait`` returns True, then take one last sample.

    ``wait(timeout_s)`` sleeps until the next deadline (or an event) and says
    whether to stop.  Deadlines are absolute, so the rate does not drift; a
    late sample skips the deadlines it missed and counts them.
    """
    period = round(1e9 / rate_hz)
    sampler.period_ns = period
    stats = LoopStats()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    writer = sampler.writer
    deadline = time.monotonic_ns()
    stats.first_ns = deadline
    stop = False
    while True:
        now = time.monotonic_ns()
        sampler.tick(now)
        stats.samples += 1
        stats.last_ns = now
        if on_tick is not None:
            on_tick(now)
        if stop or not sampler.alive:
            break
        if time.monotonic() - writer.last_flush >= FLUSH_INTERVAL_S:
            writer.flush()
        deadline += period
        now = time.monotonic_ns()
        if now >= deadline:
            skipped = (now - deadline) // period + 1
            stats.missed += skipped
            deadline += skipped * period
        stop = wait((deadline - now) / 1e9)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    stats.cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return stats
