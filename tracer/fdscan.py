"""A traced process's fd table: when it is looked at, and what a look records.

:class:`FdSchedule` is the rule for when a look is due.  Both steady-state
ticks follow it: the Python path (``Sampler._sample``) calls
:meth:`FdSchedule.due`, and the C tick (``sample_proc`` in
tracer/backends/_fasttick.c) applies the same test to the same fields,
which it is handed with :meth:`FdSchedule.for_c` and hands back when the
process returns to Python.  How far apart looks are is decided here only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .procfs import FD_KINDS, fd_kind, link_inode

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
# A socket that may still get an address (created, not yet bound; bound but
# neither listening nor connected) is looked up again at the next scans, then
# only at full scans (a never-connected socket costs one netlink request).
SOCKET_RETRIES = 20
# An fd table that cannot be read is tried again this much later.
UNREADABLE_RETRY_NS = 1_000_000_000


@dataclass(slots=True)
class FdSchedule:
    """When a process's fd table is next looked at.

    A process none of whose threads ran since the last look (``dirty``
    False) cannot have opened or closed anything: never.  Otherwise a look
    is due from ``scan_at``; and, where the backend counts fds cheaply
    (``counted``), from ``count_at`` the count is compared with ``nfds``
    (at most every CHECK_MIN_NS, and not within FD_SCAN_MIN_NS of a look):
    a count that moved makes the look due at once.
    """

    dirty: bool = False  # ran since the last look
    counted: bool = False  # the backend can count this process's fds cheaply
    nfds: int = 0  # how many fds the last look (or, with --no-fds, count) saw
    scan_at: int = 0
    count_at: int = 0
    full_at: int = 0  # a full re-resolution (FULL_FD_SCAN_NS)
    backoff_ns: int = 0  # grows while looks find no change

    def due(self, t_ns: int, count: Callable[[], int | None]) -> bool:
        """Whether a look is due at ``t_ns``; ``count()``: the fd count now, or None."""
        if not self.dirty:
            return False
        if t_ns >= self.scan_at:
            return True
        if self.counted and t_ns >= self.count_at:
            self.count_at = t_ns + CHECK_MIN_NS
            n = count()
            if n is not None and n != self.nfds:
                self.scan_at = t_ns  # opened or closed something: now
                return True
        return False

    def looked(
        self, t_ns: int, changed: bool, period_ns: int, floor_ns: int = 0, most_ns: int = 0
    ) -> None:
        """After a look at ``t_ns``: a table that ``changed`` (or an exec) is
        looked at again next sample; a quiet one less and less often, up to
        ``most_ns`` (default: by ``counted``), never sooner than ``floor_ns``."""
        if not most_ns:
            most_ns = FD_SCAN_MAX_BACKOFF_COUNTED_NS if self.counted else FD_SCAN_MAX_BACKOFF_NS
        self.dirty = False
        self.backoff_ns = 0 if changed else min(max(2 * self.backoff_ns, period_ns), most_ns)
        self.scan_at = t_ns + max(period_ns, floor_ns, self.backoff_ns)
        self.count_at = max(self.count_at, t_ns + FD_SCAN_MIN_NS)

    def for_c(self) -> tuple[bool, bool, int, int, int]:
        """The fields the C tick tests, in the order FastTick.load takes them."""
        return self.dirty, self.counted, self.nfds, self.scan_at, self.count_at


@dataclass
class FdTable:
    """A process's open fds as the last scan saw them, and their kinds."""

    fds: dict[int, str] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    # The `fds` and `fds_<kind>` columns of its processes rows.
    counts: tuple[int, ...] = (0,) * (len(FD_KINDS) + 1)
    # Sockets that may still get an address (not bound, or bound but neither
    # listening nor connected): fd -> (link target, what its last row said).
    unresolved: dict[int, tuple[str, tuple[str, str, str]]] = field(default_factory=dict)
    retries: int = 0

    def scan(
        self,
        backend: Any,
        handle: Any,
        pid: int,
        t_ns: int,
        full: bool,
        initial: bool,
        add: Callable[[str, tuple], None],
    ) -> bool | None:
        """Look at the table again and ``add`` an fds row per change
        (``initial``: the process's first look).  Whether it changed, or
        None when it could not be read."""
        old = self.fds
        new = backend.fds(handle, {} if full else old)
        if new is None:
            return None
        # A number whose target changed (reused between scans) is a close + an open.
        closed = [fd for fd, target in old.items() if new.get(fd) != target]
        opened = sorted(fd for fd, target in new.items() if old.get(fd) != target)
        kinds = self.kinds
        for fd in closed:
            kind = kinds.pop(fd, "other")
            self.unresolved.pop(fd, None)
            if fd >= 0:
                add("fds", (t_ns, pid, fd, "close", kind, old[fd], "", "", "", False))
        for fd in opened:
            kinds[fd] = fd_kind(new[fd])
        # Only sockets new since the last scan are looked up (by inode), and
        # those still waiting for an address: a few at first, then at full
        # scans only.  Also when this scan opened others (threads creating
        # sockets one after the other, then all blocking in recv, leave no
        # later scan to do it while they are connected).
        ask = {fd: link_inode(new[fd]) for fd in opened if fd >= 0 and kinds[fd] == "socket"}
        earlier = [fd for fd in self.unresolved if fd not in ask]
        if earlier and (full or self.retries < SOCKET_RETRIES):
            self.retries += 1
            ask.update((fd, link_inode(self.unresolved[fd][0])) for fd in earlier)
        else:
            earlier = []
        socks = backend.sockets(pid, ask) if ask else {}
        for fd in opened:
            if fd < 0:
                continue  # counted but not named (psutil)
            target, kind = new[fd], kinds[fd]
            found = ("", "", "")
            if kind == "socket":
                sock = socks.get(ask[fd])
                if sock is not None:
                    found = (sock.proto, sock.local, sock.remote)
                if sock is None or not sock.settled:
                    self.unresolved[fd] = (target, found)  # its address may come later
                    self.retries = 0
            add("fds", (t_ns, pid, fd, "open", kind, target, *found, initial))
        for fd in earlier:
            target, said = self.unresolved[fd]
            sock = socks.get(ask[fd])
            if sock is None:
                continue
            if sock.settled:
                del self.unresolved[fd]
            now = (sock.proto, sock.local, sock.remote)
            if now != said:  # bound, listening or connected since: an "addr" row
                add("fds", (t_ns, pid, fd, "addr", "socket", target, *now, False))
                if fd in self.unresolved:
                    self.unresolved[fd] = (target, now)
        self.fds = new
        if opened or closed:
            by_kind = dict.fromkeys(FD_KINDS, 0)
            for k in kinds.values():
                by_kind[k] += 1
            self.counts = (len(new), *by_kind.values())
            return True
        return False
