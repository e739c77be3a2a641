"""The sampling loop: walk the traced process tree, emit rows, keep time.

Runs in circuit's own process (``circuit run`` / ``attach``) or in a helper
process (``circuit.trace()``), never inside the target.  Everything on the
per-sample path is plain Python on pre-opened files; the heavy work (Arrow
conversion, Parquet) happens at flush time, once a second.
"""

from __future__ import annotations

import os
import resource
import shlex
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from .backends import (
    IDLE_REFRESH,
    PID_PROBE_MAX,
    SLOW_COUNTER_NS,
    Backend,
    ProcBackend,
    ProcessGone,
)
from .gilstate import GilReader, locate
from .procfs import FD_KINDS, fd_kind, link_inode, parse_python_maps
from .pyimage import NOT_READY
from .writer import RunWriter

FLUSH_INTERVAL_S = 1.0
# fd scanning is throttled per process so it uses at most ~1/FD_BUDGET of the
# wall clock: a target with 10,000 fds costs ~8 ms to list, so it is listed
# every ~80 ms instead of every sample (its counts are carried in between).
FD_BUDGET = 10
# An fd closed and reopened under the same number between two scans looks
# unchanged to an incremental scan; a full re-resolution this often (and after
# every exec, which closes and reopens many) heals that.
FULL_FD_SCAN_NS = 1_000_000_000
# fd scans run at most at 100 Hz: at --rate 1000 a busy process would
# otherwise spend most of the sampler's time listing an fd table that rarely
# changes; counts are carried between scans.
FD_SCAN_MIN_NS = 10_000_000
FD_SCAN_MAX_BACKOFF_NS = 50_000_000
# Where the backend can count a process's fds cheaply (Linux >= 6.2: the size
# of /proc/PID/fd), a count that moved triggers a scan at once, so a quiet
# table can back off further: what the count misses (a close and an open
# under one number) is seen at most this late.  (Each scan of a process the
# C tick holds takes a sample on the Python path: ~0.1-0.3 ms after a sleep.
# At 250 ms, the two workers of a CPU-bound pool cost ~0.1% of a core more.)
FD_SCAN_MAX_BACKOFF_COUNTED_NS = 1_000_000_000
# The look for new children and the fd count check run at most this often
# (every sample up to ~110 Hz): at 1 kHz, new processes and fds are seen
# within ~9 ms rather than 1 ms, for ~1% of a core less.
CHECK_MIN_NS = 9_000_000
# Numbers are reused at once (Python's imports open and close files all the
# time), so small tables, the common case, are re-resolved on every scan.
SMALL_FD_TABLE = 64
# A socket with no address yet (created, not yet bound) is looked up again at
# the next scans, then only at full scans (a never-bound socket costs little).
SOCKET_RETRIES = 20
# The python image mappings are read when a process is first seen and again
# this long after, each once: a process seen right after fork/exec has not
# mapped libpython yet (the dynamic loader does that a moment later), and a
# multiprocessing "spawn" child exec's python again without changing its name.
MAPS_REREAD_NS = (100_000_000, 1_000_000_000)
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
# While the C tick holds every traced process, the loop sleeps and ticks in
# C too (Sampler.burst), and Python runs at least this often: at each flush
# anyway, and sooner when run_loop's ``due`` asks (an observer's next work:
# a py-spy dump due, or one to collect): each return to Python is a sample
# on the Python path, which costs several times one in C.
BURST_MAX_NS = 1_000_000_000
# An interpreter found still starting when its maps are read is looked at
# again this often, this many times, before its GIL falls back to futexes.
GIL_RETRY_NS = 1_000_000_000
GIL_RETRIES = 5


def _fast_tick(backend: Backend) -> Any:
    """The C steady-state tick for the /proc backend, or None (no compiler
    at install, not Linux, or CIRCUIT_PYTHON_TICK=1 to take the Python path)."""
    if not isinstance(backend, ProcBackend) or os.environ.get("CIRCUIT_PYTHON_TICK"):
        return None
    try:
        from .backends import _fasttick  # type: ignore[attr-defined]
    except ImportError:
        return None
    if getattr(_fasttick, "API", 0) != 5:
        return None  # built from another version of the source
    return _fasttick.FastTick(
        backend.tick_ns,
        backend.page,
        SLOW_COUNTER_NS,
        IDLE_REFRESH,
        CHECK_MIN_NS,
        FD_SCAN_MIN_NS,
        backend.classify("R", -1, 0, "", None),
        PID_PROBE_MAX,
        backend.fork_watch()[0],
        backend.ncpu,
    )


def _gil_args(reader: GilReader) -> tuple[int, int, int, int]:
    """What the C tick needs to read a process's GIL as GilReader.read does."""
    lay = reader.layout
    pthread = -1 if lay.pthread_tid_offset is None else lay.pthread_tid_offset
    return reader.fd, lay.gil_addr, lay.tid_offset, pthread


@dataclass
class _Traced:
    pid: int
    handle: object
    fds: dict[int, str] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    counts: tuple[int, ...] = (0,) * (len(FD_KINDS) + 1)
    next_fd_scan: int = 0
    next_full_scan: int = 0
    first: bool = True
    command: bytes = b""
    dirty: bool = False  # ran since the last fd scan
    unresolved: dict[int, str] = field(default_factory=dict)  # sockets with no address yet
    retries: int = 0
    backoff_ns: int = 0  # grows while scans find no change
    last_fd_scan: int = 0
    counted: bool = False  # the backend can count this process's fds cheaply
    nfds: int = 0  # how many fds the last scan (or, with --no-fds, count) saw
    next_fd_count: int = 0
    maps: list[tuple[int, int, str, str]] = field(default_factory=list)
    maps_due: list[int] = field(default_factory=list)
    gil: GilReader | None = None  # reads the interpreter's GIL state at each sample
    gil_retries: int = 0  # looks again while the interpreter is still starting


class Sampler:
    def __init__(
        self,
        backend: Backend,
        writer: RunWriter,
        root_pid: int,
        exclude: set[int] | None = None,
        fds: bool = True,
        redact: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.backend = backend
        self.writer = writer
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
        self.period_ns = 10_000_000
        # The steady-state tick in C (tracer/backends/_fasttick.c) for the processes
        # it can take; the others, and any process it hands back for this
        # tick, take the Python path (_sample), which stays the reference.
        self._fast = _fast_tick(backend)
        self._fast_pids: set[int] = set()
        # pid -> (sample number of its last hand-back, hand-backs in a row);
        # pid -> when to try the C tick again.
        self._fast_backs: dict[int, tuple[int, int]] = {}
        self._fast_retry: dict[int, int] = {}
        self._fast_wait: dict[int, tuple[int, int]] = {}  # pid -> (last wait, when)
        self.c_samples = 0  # samples taken by the C loop (burst)
        # pid -> where its GIL figures come from: "interpreter 3.12" (read
        # from its memory) or "futex: <why not>" (meta.json's gil_sources)
        self.gil_sources: dict[int, str] = {}
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
        self.writer.add(
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
                self.writer.add("maps", (t_ns, tr.pid, *m))
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
        if self._fast is not None:
            self._fast.drop(tr.pid)  # reloaded with the reader after the next sample
            self._fast_pids.discard(tr.pid)

    def _drop(self, tr: _Traced) -> None:
        if self._fast is not None:
            self._fast.drop(tr.pid)
            self._fast_pids.discard(tr.pid)
            self._fast_backs.pop(tr.pid, None)
            self._fast_retry.pop(tr.pid, None)
            self._fast_wait.pop(tr.pid, None)
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

    def _fast_load(self, tr: _Traced, ran: bool) -> None:
        """Hand a process to the C tick after a Python sample (in which it
        ``ran`` or not), if it can take it."""
        fast, p, pid = self._fast, tr.handle, tr.pid
        b = self.backend
        assert fast is not None and isinstance(b, ProcBackend)
        big = b.taskstats_checks(p)
        if (
            tr.first
            or p.zombie
            or p.relist
            or p.rows is None
            or p.prow is None
            or p.scheds is None
            or len(p.rows) != len(p.order)
            or (big and not ran)
        ):
            fast.drop(pid)  # (taskstats checks a big idle process for less)
            self._fast_pids.discard(pid)
            return
        b.reclassify(p, tr.kinds)
        threads = [
            (
                th.tid,
                th.sched_fd,
                th.fds.get("stat", -1),
                th.fds.get("status", -1),
                th.fds.get("syscall", -1),
                th.sched,
                th.row,
                th.slept,
                th.pcount,
                th.status_ns,
            )
            for th in p.order
        ]
        fast.load(
            pid,
            (p.fd_stat, p.fd_statm, p.fd_io, p.fd_dir),
            threads,
            p.prow,
            p.rows,
            tr.counts,
            (
                p.slow_ns,
                p.rss,
                p.skips,
                tr.dirty,
                tr.counted,
                tr.nfds,
                tr.next_fd_count,
                tr.next_fd_scan,
                tr.last_fd_scan,
                tr.maps_due[0] if tr.maps_due else 0,
                TASKSTATS_IDLE_BACK if big else 0,
            ),
            tuple(p.io),
            None if tr.gil is None else _gil_args(tr.gil),
        )
        self._fast_pids.add(pid)

    def _fast_sync(self, tr: _Traced) -> None:
        """Before the Python path samples a process the C tick handed back:
        start from what the C tick last read and emitted.  Its threads that
        did not run since keep their rows (the same objects, stored once by
        the writer) instead of being read again, and the counters read every
        SLOW_COUNTER_NS carry on from the C tick's latest values."""
        assert self._fast is not None
        state = self._fast.state(tr.pid)
        if state is None:
            return
        prow, rows, (slow_ns, rss, skips, next_fd_count), io, threads = state
        p = tr.handle
        if len(threads) != len(p.order):
            return  # (cannot happen: loaded from p.order, reloaded after each relist)
        p.prow, p.rows, p.slow_ns, p.rss, p.skips = prow, rows, slow_ns, rss, skips
        p.io = type(p.io)(*io)
        p.scheds = [sched for sched, _, _ in threads]
        for th, row, (sched, pcount, status_ns) in zip(p.order, rows, threads, strict=True):
            th.row, th.sched, th.pcount, th.status_ns = row, sched, pcount, status_ns
        # (The C tick emits rows asleep in read/write too: the idle path
        # reclassifies those when an fd scan learns their fd's kind.)
        fd_io = self.backend.classify.fd_io
        p.io_idx = [i for i, row in enumerate(rows) if row[5] in fd_io]
        tr.next_fd_count = next_fd_count

    @property
    def tick_impl(self) -> str:
        """Which steady-state tick samples: ``c`` (tracer/backends/_fasttick.c) or ``python``."""
        return "python" if self._fast is None else "c"

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
        fast = self._fast
        if fast is None:
            for tr in list(self.traced.values()):
                if self._sample(tr, t_ns):
                    self._ran = True
            self.samples += 1
            return
        w = self.writer
        ran, back, n = fast.tick(t_ns, w.buffers["processes"], w.thread_batches, w.buffers["gil"])
        self._finish_tick(t_ns, ran, back, n)

    @property
    def can_burst(self) -> bool:
        """Whether the C loop can take the next samples: it holds every traced process."""
        return self._fast is not None and 0 < len(self.traced) == len(self._fast_pids)

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
        assert self._fast is not None and isinstance(self.backend, ProcBackend)
        loadavg, last_pid = self.backend.fork_watch()
        w = self.writer
        (
            done,
            missed,
            deadline,
            last,
            ran,
            n,
            self._ran,
            self._next_child_scan,
            pending,
            back,
            last_pid,
        ) = self._fast.burst(
            deadline,
            period,
            until,
            signals,
            watch_fd,
            loadavg,
            last_pid,
            self.exclude,
            self._ran,
            self._next_child_scan,
            w.buffers["processes"],
            w.thread_batches,
            w.buffers["gil"],
        )
        self.backend.forks_seen(last_pid)
        self.samples += done
        self.c_samples += done
        self.thread_samples += n
        for pid in ran:
            self.traced[pid].dirty = True
        if pending:
            if back is None:
                self.tick(pending)  # a pid was handed out: look for new children
            else:
                self._finish_tick(pending, (), back, 0)  # (its ran pids are in `ran`)
        return done, missed, deadline, last, pending

    def _finish_tick(self, t_ns: int, ran: Any, back: list[int], n: int) -> None:
        """The rest of a tick the C tick began: the processes it handed back,
        and those it does not hold, on the Python path."""
        fast = self._fast
        assert fast is not None
        self.thread_samples += n
        if ran:
            self._ran = True
            for pid in ran:
                self.traced[pid].dirty = True
        loaded = self._fast_pids
        todo = [*back, *(pid for pid in self.traced if pid not in loaded)]
        for pid in back:
            # A process handed back on every sample (threads that sleep
            # again after running: GIL contention, I/O) would cost a C
            # attempt and a reload each time: it stays on the Python path
            # for a while.
            last, streak = self._fast_backs.get(pid, (-2, 0))
            streak = streak + 1 if last == self.samples - 1 else 1
            self._fast_backs[pid] = (self.samples, streak)
            if streak >= FAST_MAX_BACKS:
                wait, when = self._fast_wait.get(pid, (0, 0))
                recent = t_ns - when < FAST_RETRY_NS + wait
                wait = min(2 * wait, FAST_RETRY_NS) if recent and wait else FAST_RETRY_MIN_NS
                self._fast_wait[pid] = (wait, t_ns)
                self._fast_retry[pid] = t_ns + wait
                fast.drop(pid)
                loaded.discard(pid)
        for pid in back:
            self._fast_sync(self.traced[pid])
        retry = self._fast_retry
        for pid in todo:
            tr = self.traced[pid]
            ran = self._sample(tr, t_ns)
            self._ran = self._ran or ran
            if pid in self.traced and t_ns >= retry.get(pid, 0):
                self._fast_load(tr, ran)
        self.samples += 1

    def _sample(self, tr: _Traced, t_ns: int) -> bool:
        """Sample one process; True if any of its threads ran (or it exited)."""
        writer = self.writer
        if tr.first:
            tr.command = self.backend.command(tr.handle)
            if self.scan_fds:
                # Before the first sample, so read/write waits can name their fd's kind.
                self._scan_fds(tr, t_ns, full=True)
            else:
                # No scans: the fd count only says when to look for an exec
                # (which closes and opens files), as it says when to scan.
                n = self.backend.fd_count(tr.handle)
                tr.counted, tr.nfds = n is not None, n or 0
                tr.first = False  # (no first scan to do it; the C tick waits for it)
        try:
            prow, rows, ran = self.backend.sample(tr.handle, tr.kinds, t_ns)
        except ProcessGone:
            self._drop(tr)
            return True
        # A process none of whose threads ran since the last check cannot
        # have exec'd, opened or closed anything: skip it.
        tr.dirty = tr.dirty or ran
        if (
            tr.dirty
            and tr.counted
            and tr.next_fd_count <= t_ns < tr.next_fd_scan
            and t_ns >= tr.last_fd_scan + FD_SCAN_MIN_NS
        ):
            tr.next_fd_count = t_ns + CHECK_MIN_NS
            n = self.backend.fd_count(tr.handle)
            if n is not None and n != tr.nfds:
                tr.next_fd_scan = t_ns  # opened or closed something: now
        if tr.dirty and t_ns >= tr.next_fd_scan:
            full = len(tr.fds) <= SMALL_FD_TABLE or t_ns >= tr.next_full_scan
            command = self.backend.command(tr.handle)
            execd = bool(command) and command != tr.command
            if execd:
                tr.command = command
                full = True
                self._record_info(tr.pid, prow[1], t_ns, tr.pid == self.root_pid)
            if self.scan_fds:
                self._scan_fds(tr, t_ns, full)
            else:
                # Only the look for an exec, which backs off as a quiet fd
                # table's rescan does (each takes a sample on the Python path).
                tr.dirty = False
                tr.last_fd_scan = t_ns
                if tr.counted:
                    tr.nfds = self.backend.fd_count(tr.handle) or tr.nfds
                most = FD_SCAN_MAX_BACKOFF_COUNTED_NS
                tr.backoff_ns = 0 if execd else min(max(2 * tr.backoff_ns, self.period_ns), most)
                tr.next_fd_scan = t_ns + max(self.period_ns, tr.backoff_ns)
        if tr.maps_due and t_ns >= tr.maps_due[0]:
            tr.maps_due.pop(0)
            self._record_maps(tr, t_ns)
        writer.add("processes", (t_ns, *prow, *tr.counts))
        if rows:
            writer.add_threads(t_ns, rows)
            self.thread_samples += len(rows)
        if tr.gil is not None:
            g = tr.gil.read()
            if g is not None:
                writer.add("gil", (t_ns, tr.pid, *g))
        if tr.handle.zombie and not (self.keep_zombie_root and tr.pid == self.root_pid):
            self._drop(tr)  # exited: this last sample holds its final totals
        return ran

    def _scan_fds(self, tr: _Traced, t_ns: int, full: bool = False) -> None:
        # CPU time, not wall: a scan preempted on a busy machine must not push
        # the next one far away.
        c0 = time.thread_time_ns()
        old = tr.fds
        new = self.backend.fds(tr.handle, {} if full else old)
        if new is None:
            tr.next_fd_scan = t_ns + 1_000_000_000  # unreadable: retry once a second
            return
        # A number whose target changed (reused between scans) is a close + an open.
        closed = [fd for fd, target in old.items() if new.get(fd) != target]
        opened = [fd for fd, target in new.items() if old.get(fd) != target]
        kinds = tr.kinds
        add = self.writer.add
        for fd in closed:
            kind = kinds.pop(fd, "other")
            tr.unresolved.pop(fd, None)
            if fd >= 0:
                add("fds", (t_ns, tr.pid, fd, "close", kind, old[fd], "", "", "", False))
        socks: dict[int, tuple[str, str, str]] | None = None
        for fd in sorted(opened):
            target = new[fd]
            kind = kinds[fd] = fd_kind(target)
            if fd < 0:
                continue  # counted but not named (psutil)
            proto = local = remote = ""
            if kind == "socket":
                if socks is None:
                    socks = self.backend.sockets(tr.pid)
                proto, local, remote = socks.get(link_inode(target), ("", "", ""))
                if not proto:
                    tr.unresolved[fd] = target  # not bound/connected yet: retry later
            add("fds", (t_ns, tr.pid, fd, "open", kind, target, proto, local, remote, tr.first))
        just = set(opened)
        earlier = [fd for fd in tr.unresolved if fd not in just]
        if earlier and (full or tr.retries < SOCKET_RETRIES):
            tr.retries += 1
            # Sockets that got an address since they were opened: an "addr"
            # event.  Also when this scan opened others (threads creating
            # sockets one after the other, then all blocking in recv, leave
            # no later scan to do it while they are connected).
            if socks is None:
                socks = self.backend.sockets(tr.pid)
            for fd in earlier:
                target = tr.unresolved[fd]
                found = socks.get(link_inode(target))
                if found:
                    del tr.unresolved[fd]
                    add("fds", (t_ns, tr.pid, fd, "addr", "socket", target, *found, False))
        if tr.first:
            tr.counted = self.backend.fd_count(tr.handle) is not None
        tr.fds = new
        tr.nfds = len(new)
        tr.last_fd_scan = t_ns
        tr.first = tr.dirty = False
        if opened or closed:
            by_kind = dict.fromkeys(FD_KINDS, 0)
            for k in kinds.values():
                by_kind[k] += 1
            tr.counts = (len(new), *by_kind.values())
        cost = time.thread_time_ns() - c0
        # A busy process whose fd table does not change (a CPU-bound worker)
        # is rescanned less and less often, up to FD_SCAN_MAX_BACKOFF_NS; any
        # change brings it back to every sample.
        if opened or closed:
            tr.backoff_ns = 0
        else:
            most = FD_SCAN_MAX_BACKOFF_COUNTED_NS if tr.counted else FD_SCAN_MAX_BACKOFF_NS
            tr.backoff_ns = min(max(2 * tr.backoff_ns, self.period_ns), most)
        tr.next_fd_scan = t_ns + max(
            self.period_ns, FD_SCAN_MIN_NS, cost * FD_BUDGET, tr.backoff_ns
        )
        if full:
            tr.next_full_scan = t_ns + max(FULL_FD_SCAN_NS, cost * FD_BUDGET)

    def close(self) -> None:
        for tr in list(self.traced.values()):
            self._drop(tr)
        self.backend.shutdown()


@dataclass
class LoopStats:
    samples: int = 0
    c_samples: int = 0  # of which the C loop took (Sampler.burst)
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
    signals: tuple[int, ...] = (),
    watch_fd: int = -1,
    until_ns: int | None = None,
    due: Callable[[], int | None] | None = None,
) -> LoopStats:
    """Sample at ``rate_hz`` until ``wait`` returns True, then take one last sample.

    ``wait(timeout_s)`` sleeps until the next deadline (or an event) and says
    whether to stop.  Deadlines are absolute, so the rate does not drift; a
    late sample skips the deadlines it missed and counts them.

    While the C tick holds every traced process, the sleeps and samples run
    in C (``Sampler.burst``) until Python is needed: when one of ``signals``
    (those ``wait`` takes, blocked) is pending or ``watch_fd`` is readable,
    by ``until_ns`` (the session's own end), for a flush, by the time ``due()``
    returns (None: nothing due), and at least every BURST_MAX_NS; ``on_tick``
    and ``wait`` run then, not after every sample.  A ``wait`` that stops on
    its own clock should come with ``until_ns``.
    """
    period = round(1e9 / rate_hz)
    sampler.period_ns = period
    stats = LoopStats()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    writer = sampler.writer
    deadline = time.monotonic_ns()
    stats.first_ns = deadline
    stop = False
    taken = 0  # the time of a sample the burst took (finished in Python)
    while True:
        if taken:
            now, taken = taken, 0
        else:
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
        if sampler.can_burst:
            until = min(now + BURST_MAX_NS, round((writer.last_flush + FLUSH_INTERVAL_S) * 1e9))
            if until_ns is not None:
                until = min(until, until_ns)
            when = due() if due is not None else None
            if when is not None:
                until = min(until, when)
            done, missed, deadline, last, taken = sampler.burst(
                deadline, period, until, signals, watch_fd
            )
            stats.samples += done
            stats.c_samples += done
            stats.missed += missed
            if done:
                stats.last_ns = last
            if taken:
                continue
            now = time.monotonic_ns()  # (the deadline may have just passed: no wait then)
        stop = wait(max(deadline - now, 0) / 1e9)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    stats.cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return stats
