"""The /proc backend off the per-sample path: new children, static facts,
fd tables and our fd limit (tracer/backends/proc.py delegates here)."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from .. import procfs

# Child discovery probes the pids handed out since the last look when there
# are fewer than this; more, and it lists /proc.
PID_PROBE_MAX = 64


def raise_fd_limit() -> bool:
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


class ChildFinder:
    """Finds the processes forked by the traced ones since the last look.

    /proc/loadavg names the last pid (or tid) the kernel handed out: while
    it does not move, nothing was forked anywhere and no scan is needed.
    """

    def __init__(self, loadavg: int) -> None:
        self.loadavg = loadavg  # an open /proc/loadavg
        self.last_pid = -1  # the last pid seen in it
        self._foreign: set[int] = set()  # pids known to be no one's we trace

    def new_children(
        self,
        traced: set[int],
        exclude: set[int],
        adopter: int | None = None,
        own: Collection[int] = (),
    ) -> list[tuple[int, int]]:
        """As Backend.new_children."""
        last = procfs.parse_loadavg_last_pid(os.pread(self.loadavg, 128, 0))
        if last == self.last_pid:
            return []
        first = self.last_pid + 1
        if last < self.last_pid:
            self._foreign.clear()  # pid numbers wrapped: old verdicts may be stale
        self.last_pid = last
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


def process_info(pid: int) -> dict[str, Any]:
    """As Backend.info."""
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


def list_fds(base: str, known: dict[int, str]) -> dict[int, str] | None:
    """As Backend.fds, for the process at ``base`` (/proc/PID)."""
    d = f"{base}/fd/"
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


def count_fds(fd_dir: int) -> int | None:
    """As Backend.fd_count, from an open /proc/PID/fd."""
    # Since Linux 6.2 the size of /proc/PID/fd is the number of open fds:
    # one fstat (~1 µs) instead of listing the table.  0 on older kernels
    # (a live process always has some fd open... or none: then we scan).
    if fd_dir < 0:
        return None
    try:
        n = os.fstat(fd_dir).st_size
    except OSError:
        return None
    return n or None
