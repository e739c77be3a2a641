"""The portable backend: psutil, one call per thread (~20x the /proc backend's cost)."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from ..sockdiag import Sock
from .base import Backend, ProcessGone, ProcessRow, ThreadRow


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
            rows.append(
                ThreadRow(
                    pid=proc.pid,
                    tid=t.id,
                    name=name,
                    state=state,
                    wait=self.classify(state, -1, 0, "", None),
                    syscall=-1,
                    arg0=0,
                    wchan="",
                    user_ns=user_ns,
                    system_ns=sys_ns,
                    cpu_ns=user_ns + sys_ns,
                    run_delay_ns=-1,
                    ctx_vol=vol,
                    ctx_invol=invol,
                    cpu=cpu,
                )
            )
        prow = ProcessRow(
            pid=proc.pid,
            ppid=ppid,
            num_threads=len(threads),
            rss_bytes=mem.rss,
            user_ns=round(ct.user * 1e9),
            system_ns=round(ct.system * 1e9),
            read_chars=iot[0],
            write_chars=iot[1],
            read_bytes=iot[2],
            write_bytes=iot[3],
            children_user_ns=round(getattr(ct, "children_user", 0.0) * 1e9),
            children_system_ns=round(getattr(ct, "children_system", 0.0) * 1e9),
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

    def sockets(self, pid: int, fds: dict[int, int]) -> dict[int, Sock]:
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
