"""The sampling loop: walk the traced process tree, emit rows, keep time.

Runs in circuit's own process (``circuit run`` / ``attach``) or in a helper
process (``circuit.trace()``), never inside the target.  Everything on the
per-sample path is plain Python on pre-opened files; the heavy work (Arrow
conversion, Parquet) happens at flush time, once a second.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from .backends import Backend, ProcessGone
from .exits import ExitFilter, ExitListener
from .fdscan import (
    CHECK_MIN_NS,
    FD_BUDGET,
    FD_SCAN_MAX_BACKOFF_COUNTED_NS,
    FD_SCAN_MIN_NS,
    FULL_FD_SCAN_NS,
    SMALL_FD_TABLE,
    UNREADABLE_RETRY_NS,
    FdSchedule,
    FdTable,
)
from .gilstate import GilReader, locate
from .procfs import parse_python_maps
from .pyimage import NOT_READY
from .sink import Sink

# The python image mappings are read when a process is first seen and again
# this long after, each once: a process seen right after fork/exec has not
# mapped libpython yet (the dynamic loader does that a moment later), and a
# multiprocessing "spawn" child exec's python again without changing its name.
MAPS_REREAD_NS = (100_000_000, 1_000_000_000)
# An interpreter found still starting when its maps are read is looked at
# again this often, this many times, before its GIL falls back to futexes.
GIL_RETRY_NS = 1_000_000_000
GIL_RETRIES = 5


@dataclass
class _Traced:
    pid: int
    handle: object
    table: FdTable = field(default_factory=FdTable)
    schedule: FdSchedule = field(default_factory=FdSchedule)
    first: bool = True  # its first fd scan is still to do
    command: bytes = b""
    maps: list[tuple[int, int, str, str]] = field(default_factory=list)
    maps_due: list[int] = field(default_factory=list)
    gil: GilReader | None = None  # reads the interpreter's GIL state at each sample
    gil_retries: int = 0  # looks again while the interpreter is still starting


class Sampler:
    def __init__(
        self,
        backend: Backend,
        sink: Sink,
        root_pid: int,
        exclude: set[int] | None = None,
        fds: bool = True,
        redact: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.backend = backend
        self.sink = sink
        self.root_pid = root_pid
        self.exclude = set(exclude or ())
        self.scan_fds = fds
        # `circuit run` reaps the root itself and stops on SIGCHLD; elsewhere an
        # exited (zombie) root ends the run.
        self.keep_zombie_root = False
        self.redact = redact  # --redact: applied to every command line recorded
        # `circuit run` makes itself a child subreaper: orphans of the traced
        # tree (`sh -c "job &"`, daemons) are reparented to it instead of init,
        # and traced.  ``own_children`` says which of its children are its own
        # (py-spy); the orphans it adopted it reaps once they have exited.
        self.adopter: int | None = None
        self.own_children: Callable[[], Collection[int]] = tuple
        self.adopted: set[int] = set()
        self.traced: dict[int, _Traced] = {}
        self.seen: set[int] = set()
        self.samples = 0
        self._ran = True  # a traced process ran since the last look for children
        self._next_child_scan = 0
        self.thread_samples = 0
        self.fd_scan_ns = 0  # CPU time of the fd scans (a cause the behind warning names)
        self.fd_scans = 0
        self.period_ns = 10_000_000
        # The backend's steady-state tick in C for the processes it can
        # take; the others, and any process it hands back for this tick,
        # take the Python path (_sample), which stays the reference.
        self.fast = backend.fast_path(sink)
        self.c_samples = 0  # samples taken by the C loop (burst)
        # pid -> where its GIL figures come from: "interpreter 3.12" (read
        # from its memory) or "futex: <why not>" (meta.json's gil_sources)
        self.gil_sources: dict[int, str] = {}
        # The kernel's exit records (tracer/exits.py), when circuit may listen:
        # drained at each return to Python (drain_exits).
        self.exits: ExitListener | None = None
        self.exit_filter = ExitFilter()
        self.exit_rows = 0
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
        cmdline = info["cmdline"] if self.redact is None else self.redact(info["cmdline"])
        self.sink.add(
            "procs",
            (
                t_ns,
                pid,
                info["ppid"] if info["ppid"] >= 0 else ppid,
                info["name"],
                info["exe"],
                shlex.join(cmdline),
                root,
            ),
        )
        tr = self.traced.get(pid)
        if tr is not None:
            self._record_maps(tr, t_ns)
            tr.maps_due = [t_ns + d for d in MAPS_REREAD_NS]

    def _record_maps(self, tr: _Traced, t_ns: int) -> None:
        """Snapshot the python image mappings (never per sample: see MAPS_REREAD_NS)."""
        try:
            with open(f"/proc/{tr.pid}/maps", "rb") as f:
                maps = parse_python_maps(f.read())
        except OSError:
            return  # gone, or not Linux: GIL waits then stay classified as `lock`
        if maps != tr.maps:
            tr.maps = maps
            for m in maps:
                self.sink.add("maps", (t_ns, tr.pid, *m))
            if tr.gil is not None:  # another image: an exec
                tr.gil.close()
                tr.gil = None
        if maps and tr.gil is None:
            self._locate_gil(tr, t_ns)

    def _locate_gil(self, tr: _Traced, t_ns: int) -> None:
        """Find the interpreter's GIL in the process's memory; where it
        cannot be read, say why (its GIL waits still show as futex waits)."""
        found = locate(tr.pid)
        if isinstance(found, str):
            self.gil_sources[tr.pid] = f"futex: {found}"
            if found.startswith(NOT_READY) and not tr.maps_due and tr.gil_retries < GIL_RETRIES:
                tr.gil_retries += 1
                tr.maps_due.append(t_ns + GIL_RETRY_NS)
            return
        try:
            tr.gil = GilReader(tr.pid, found)
        except OSError as e:
            self.gil_sources[tr.pid] = f"futex: cannot read its memory ({e.strerror})"
            return
        self.gil_sources[tr.pid] = "interpreter {}.{}".format(*found.version)
        if self.fast is not None:
            self.fast.unload(tr.pid)  # reloaded with the reader after the next sample

    def _drop(self, tr: _Traced) -> None:
        if self.fast is not None:
            self.fast.forget(tr.pid)
        self.backend.close(tr.handle)
        if tr.gil is not None:
            tr.gil.close()
        del self.traced[tr.pid]
        if tr.pid in self.adopted:
            self.reap_adopted()

    def reap_adopted(self) -> None:
        """Reap the adopted orphans that have exited and were sampled (their
        last sample read their final totals; who else would reap them)."""
        for pid in [p for p in self.adopted if p not in self.traced]:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # reaped already, or never ours
            if done:
                self.adopted.discard(pid)

    def _load(self, tr: _Traced, ran: bool) -> None:
        """Offer a process to the C tick after its Python sample (in which
        it ``ran`` or not); not before its first fd scan."""
        assert self.fast is not None
        if tr.first:
            self.fast.unload(tr.pid)
            return
        due = tr.maps_due[0] if tr.maps_due else 0
        self.fast.load(tr.handle, ran, tr.table, tr.schedule, due, tr.gil)

    @property
    def tick_impl(self) -> str:
        """Which steady-state tick samples: ``c`` (tracer/backends/_fasttick.c) or ``python``."""
        return "python" if self.fast is None else "c"

    @property
    def alive(self) -> bool:
        return self.root_pid in self.traced

    # -- one sample ----------------------------------------------------------

    def tick(self, t_ns: int) -> None:
        self.backend.check_saturation()
        # Only a process that ran can have forked: the /proc scan for new
        # children is skipped while none of the traced processes ran.
        if self._ran and self.traced and t_ns >= self._next_child_scan:
            self._ran = False
            self._next_child_scan = t_ns + CHECK_MIN_NS
            own = self.own_children() if self.adopter is not None else ()
            found = self.backend.new_children(set(self.traced), self.exclude, self.adopter, own)
            for pid, ppid in found:
                self._add(pid, ppid, t_ns)
                if ppid == self.adopter:
                    self.adopted.add(pid)
        fast = self.fast
        if fast is None:
            for tr in list(self.traced.values()):
                if self._sample(tr, t_ns):
                    self._ran = True
            self.samples += 1
        else:
            ran, back, n, scan = fast.tick(t_ns)
            self._finish_tick(t_ns, ran, back, n, scan)
        self.drain_exits(t_ns)

    @property
    def can_burst(self) -> bool:
        """Whether the C loop can take the next samples: it holds every traced process."""
        return self.fast is not None and 0 < len(self.traced) == len(self.fast.loaded)

    def burst(
        self,
        deadline: int,
        period: int,
        until: int,
        signals: tuple[int, ...] = (),
        watch_fd: int = -1,
    ) -> tuple[int, int, int, int, int]:
        """Sleep to each deadline and tick, in C, until Python is needed
        (``FastTick.burst`` says when).  Returns (samples taken, deadlines
        missed, deadline, time of the last sample, time of a sample this
        call took with Python's help or 0): run_loop carries on from there."""
        assert self.fast is not None
        done = missed = last = 0
        while True:
            b = self.fast.burst(
                deadline,
                period,
                until,
                signals,
                watch_fd,
                self.exclude,
                self._ran,
                self._next_child_scan,
            )
            self._ran, self._next_child_scan = b.ran_flag, b.next_child_scan
            self.samples += b.done
            self.c_samples += b.done
            self.thread_samples += b.rows
            done, missed, deadline = done + b.done, missed + b.missed, b.deadline
            last = b.last or last
            for pid in b.ran:
                self.traced[pid].schedule.dirty = True
            if b.pending:
                if b.back is None:
                    self.tick(b.pending)  # a pid was handed out: look for new children
                else:
                    # (its ran pids are in `ran`)
                    self._finish_tick(b.pending, (), b.back, 0, b.scan)
            elif b.scan:
                for pid in b.scan:
                    self._look_after_c(pid, b.last)
            if b.done:
                self.drain_exits(b.last)
            # Only fd looks were due: carry on in C.
            if b.pending or not b.scan or not self.can_burst:
                return done, missed, deadline, last, b.pending

    def _finish_tick(self, t_ns: int, ran: Any, back: list[int], n: int, scan: list[int]) -> None:
        """The rest of a tick the C tick began: the fd looks due in the
        processes it sampled (``scan``), the processes it handed back, and
        those it does not hold, on the Python path."""
        for pid in scan:
            self._look_after_c(pid, t_ns)
        fast = self.fast
        assert fast is not None
        self.thread_samples += n
        if ran:
            self._ran = True
            for pid in ran:
                self.traced[pid].schedule.dirty = True
        todo = [*back, *(pid for pid in self.traced if pid not in fast.loaded)]
        if back:
            fast.handed_back(back, self.samples, t_ns)
            for pid in back:
                tr = self.traced[pid]
                fast.sync(tr.handle, tr.schedule)
        for pid in todo:
            tr = self.traced[pid]
            ran = self._sample(tr, t_ns)
            self._ran = self._ran or ran
            if pid in self.traced and fast.may_load(pid, t_ns):
                self._load(tr, ran)
        self.samples += 1

    def _sample(self, tr: _Traced, t_ns: int) -> bool:
        """Sample one process; True if any of its threads ran (or it exited)."""
        backend, sink, sched = self.backend, self.sink, tr.schedule
        if tr.first:
            tr.command = backend.command(tr.handle)
            if self.scan_fds:
                # Before the first sample, so read/write waits can name their fd's kind.
                self._scan_fds(tr, t_ns, full=True)
            else:
                # No scans: the fd count only says when to look for an exec
                # (which closes and opens files), as it says when to scan.
                n = backend.fd_count(tr.handle)
                sched.counted, sched.nfds = n is not None, n or 0
                tr.first = False  # (no first scan to do it; the C tick waits for it)
        try:
            prow, rows, ran = backend.sample(tr.handle, tr.table.kinds, t_ns)
        except ProcessGone:
            self._drop(tr)
            return True
        # A process none of whose threads ran since the last check cannot
        # have exec'd, opened or closed anything: skip it.
        sched.dirty = sched.dirty or ran
        if sched.due(t_ns, lambda: backend.fd_count(tr.handle)):
            self._look(tr, t_ns, prow.ppid)
        if tr.maps_due and t_ns >= tr.maps_due[0]:
            tr.maps_due.pop(0)
            self._record_maps(tr, t_ns)
        sink.add("processes", (t_ns, *prow, *tr.table.counts))
        if rows:
            sink.add_threads(t_ns, rows)
            self.thread_samples += len(rows)
        if tr.gil is not None:
            g = tr.gil.read()
            if g is not None:
                sink.add("gil", (t_ns, tr.pid, *g))
        if tr.handle.zombie and not (self.keep_zombie_root and tr.pid == self.root_pid):
            self._drop(tr)  # exited: this last sample holds its final totals
        return ran

    def _look(self, tr: _Traced, t_ns: int, ppid: int) -> None:
        """The look FdSchedule found due: for an exec, and at the fd table."""
        backend, sched = self.backend, tr.schedule
        full = len(tr.table.fds) <= SMALL_FD_TABLE or t_ns >= sched.full_at
        command = backend.command(tr.handle)
        execd = bool(command) and command != tr.command
        if execd:
            tr.command = command
            full = True
            self._record_info(tr.pid, ppid, t_ns, tr.pid == self.root_pid)
        if self.scan_fds:
            self._scan_fds(tr, t_ns, full)
        else:
            # Only the look for an exec, which backs off as a quiet fd
            # table's rescan does.
            if sched.counted:
                sched.nfds = backend.fd_count(tr.handle) or sched.nfds
            most = FD_SCAN_MAX_BACKOFF_COUNTED_NS
            sched.looked(t_ns, execd, self.period_ns, most_ns=most)

    def _look_after_c(self, pid: int, t_ns: int) -> None:
        """The look due in a process the C tick sampled at ``t_ns``, as
        ``_sample`` looks after sampling: the tick's processes row gets the
        counts of this look, and the process stays in C with the new table."""
        tr, fast = self.traced.get(pid), self.fast
        if tr is None or fast is None or tr.handle.prow is None:
            return
        before = tr.table.fds  # (a scan replaces the dict, never changes it)
        self._look(tr, t_ns, tr.handle.prow.ppid)
        after = tr.table.fds
        if self.scan_fds:
            buf = self.sink.tick_buffers().processes
            nc = len(tr.table.counts)
            for i in range(len(buf) - 1, -1, -1):
                row = buf[i]
                if row[0] != t_ns:
                    break
                if row[1] == pid:
                    buf[i] = (*row[:-nc], *tr.table.counts)
                    break
        if pid not in self.traced:
            return
        changed = (
            set()
            if after is before
            else {fd for fd in before.keys() | after.keys() if before.get(fd) != after.get(fd)}
        )
        if not fast.looked(pid, tr.table, tr.schedule, changed):
            sched = tr.schedule
            scan_at, count_at = sched.scan_at, sched.count_at
            fast.sync(tr.handle, sched)  # (which takes C's schedule: this look's stays)
            sched.scan_at, sched.count_at = scan_at, count_at
            self._load(tr, True)

    def _scan_fds(self, tr: _Traced, t_ns: int, full: bool = False) -> None:
        # CPU time, not wall: a scan preempted on a busy machine must not push
        # the next one far away.
        c0 = time.thread_time_ns()
        sched = tr.schedule
        changed = tr.table.scan(
            self.backend, tr.handle, tr.pid, t_ns, full, tr.first, self.sink.add
        )
        if changed is None:
            sched.scan_at = t_ns + UNREADABLE_RETRY_NS
            return
        if tr.first:
            sched.counted = self.backend.fd_count(tr.handle) is not None
        sched.nfds = len(tr.table.fds)
        tr.first = False
        cost = time.thread_time_ns() - c0
        self.fd_scan_ns += cost
        self.fd_scans += 1
        # A busy process whose fd table does not change (a CPU-bound worker)
        # is rescanned less and less often; any change brings it back to
        # every sample.
        sched.looked(t_ns, changed, self.period_ns, max(FD_SCAN_MIN_NS, cost * FD_BUDGET))
        if full:
            sched.full_at = t_ns + max(FULL_FD_SCAN_NS, cost * FD_BUDGET)

    def drain_exits(self, t_ns: int) -> None:
        """Keep the exit records of the traced tree read since the last drain."""
        if self.exits is None:
            return
        for r in self.exit_filter.keep(self.exits.drain(), self.seen, t_ns):
            self.sink.add("exits", (t_ns, *r))
            self.exit_rows += 1

    def close(self) -> None:
        if self.exits is not None:
            self.drain_exits(time.monotonic_ns())  # the tree's last exits
            self.exits.close()
            # (kept, not None: the run's meta reports what it read)
        for tr in list(self.traced.values()):
            self._drop(tr)
        self.backend.shutdown()
