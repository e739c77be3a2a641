"""The kernel's exit notifications (taskstats): every exiting task's final counters.

When a thread or process exits, the kernel sends each taskstats listener
registered on the exiting CPU one message with the task's final figures:
CPU time, run-queue delay, context switches.  Sampling /proc misses what
lives between two samples and the last stretch of what it saw; these
records do not.  The sampler drains them without blocking at each return
to Python (tracer/sampler.py) and keeps those of the traced tree (rows of
the ``exits`` table, docs/format.md).

Registering needs CAP_NET_ADMIN in the initial user and pid namespaces
(root, outside a container) and CONFIG_TASKSTATS; without them
:meth:`ExitListener.open` says why not, and the run falls back to the
parents' cumulative children CPU (docs/format.md, ``processes``).
``CIRCUIT_EXITS=0`` turns the source off.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time
from collections import deque
from typing import Any, NamedTuple

from .taskstats import GENL_ID_CTRL, NLM_F_REQUEST, NLMSG_ERROR, _attrs, _nla

ENV_SWITCH = "CIRCUIT_EXITS"  # "0": never listen
NETLINK_GENERIC = 16
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
TASKSTATS_CMD_GET = 1
TASKSTATS_CMD_NEW = 2
TASKSTATS_TYPE_STATS = 3
TASKSTATS_TYPE_AGGR_PID = 4
TASKSTATS_CMD_ATTR_REGISTER_CPUMASK = 3
TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK = 4
NLMSG_HDR = 16
GENL_HDR = 4
# Exits arrive in bursts (a pool of 2,000 threads ending) between two drains
# up to a second apart; each costs ~1-2 KB of the socket's budget.
RCVBUF_BYTES = 64 << 20
SELF_TEST_S = 1.0

# struct taskstats (include/uapi/linux/taskstats.h): byte offsets of the
# fields used, with the struct version that added each.  u64s are 8-byte
# aligned; ac_comm is 32 bytes at 80.
_VERSION = 0  # u16
_CPU_DELAY_TOTAL = 24  # sched_info.run_delay (ns): time runnable, waiting for a CPU
_CPU_RUN_VIRTUAL_TOTAL = 72  # se.sum_exec_runtime (ns): what /proc/TID/schedstat says
_AC_COMM = 80
_AC_PID = 128  # the task's id (a thread's tid)
_AC_PPID = 132  # its process's parent
_AC_ETIME = 144  # µs from start to exit
_AC_UTIME = 152  # µs, tick-sampled (raw task_cputime)
_AC_STIME = 160
_NVCSW = 272
_NIVCSW = 280
_AC_TGID = 368  # u32, version >= 11: the task's process
_TGID_VERSION = 11
_MIN_LEN = _NIVCSW + 8


class Exit(NamedTuple):
    """One exiting task's final figures (a row of ``exits`` without t_ns)."""

    pid: int  # its process (tgid); 0 when the kernel's struct is too old to say
    tid: int
    ppid: int  # its process's parent
    name: str
    user_ns: int
    system_ns: int
    cpu_ns: int
    run_delay_ns: int
    ctx_vol: int
    ctx_invol: int
    elapsed_ns: int


# The fields parse_stats reads, in one unpack (standard sizes, no padding).
_FIELDS = struct.Struct(
    f"=H{_CPU_DELAY_TOTAL - 2}xQ{_CPU_RUN_VIRTUAL_TOTAL - _CPU_DELAY_TOTAL - 8}xQ32s"
    f"{_AC_PID - _AC_COMM - 32}xII{_AC_ETIME - _AC_PPID - 4}xQQQ"
    f"{_NVCSW - _AC_STIME - 8}xQQ"
)
_TGID = struct.Struct("=I")
_NLMSG = struct.Struct("=IH")
_NLA = struct.Struct("=HH")


def parse_stats(buf: bytes, start: int = 0, end: int | None = None) -> Exit | None:
    """A struct taskstats as the kernel sent it (in ``buf[start:end]``); None
    if too short to hold the switch counts.  ``pid`` is 0 when its version
    has no ac_tgid."""
    if end is None:
        end = len(buf)
    if end - start < _MIN_LEN:
        return None
    (version, run_delay, run_ns, comm, tid, ppid, etime, utime, stime, nvcsw, nivcsw) = (
        _FIELDS.unpack_from(buf, start)
    )
    tgid = 0
    if version >= _TGID_VERSION and end - start >= _AC_TGID + 4:
        (tgid,) = _TGID.unpack_from(buf, start + _AC_TGID)
    return Exit(
        tgid,
        tid,
        ppid,
        comm.split(b"\0", 1)[0].decode("utf-8", "backslashreplace"),
        utime * 1000,
        stime * 1000,
        run_ns,
        run_delay,
        nvcsw,
        nivcsw,
        etime * 1000,
    )


def _attr(data: bytes, i: int, end: int, kind: int) -> tuple[int, int]:
    """Where the payload of netlink attribute ``kind`` is in ``data[i:end]``
    (start, end); (0, 0) when it is not there.  (Offsets, not slices: a drain
    parses every exit on the machine.)"""
    while i + 4 <= end:
        n, k = _NLA.unpack_from(data, i)
        if n < 4:
            break
        if k & 0x3FFF == kind:
            return i + 4, min(i + n, end)
        i += (n + 3) & ~3
    return 0, 0


def parse_messages(data: bytes) -> list[Exit]:
    """The per-task exit records in one datagram of netlink messages.

    Each TASKSTATS_CMD_NEW message holds an AGGR_PID (the task: PID + STATS)
    and, when a multi-threaded process's last thread exits, an AGGR_TGID
    whose stats carry only delay sums: only the per-task records are kept
    (a process's totals are the sum of its threads')."""
    out: list[Exit] = []
    i, size = 0, len(data)
    while i + NLMSG_HDR <= size:
        n, kind = _NLMSG.unpack_from(data, i)
        if n < NLMSG_HDR:
            break
        if (
            kind != NLMSG_ERROR
            and n >= NLMSG_HDR + GENL_HDR
            and data[i + NLMSG_HDR] == TASKSTATS_CMD_NEW
        ):
            a, b = _attr(data, i + NLMSG_HDR + GENL_HDR, min(i + n, size), TASKSTATS_TYPE_AGGR_PID)
            if b:
                s0, s1 = _attr(data, a, b, TASKSTATS_TYPE_STATS)
                if s1:
                    rec = parse_stats(data, s0, s1)
                    if rec is not None:
                        out.append(rec)
        i += (n + 3) & ~3
    return out


def _cpumask() -> str:
    """Every possible CPU: a listener hears only the CPUs it registered on."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            return f.read().strip()
    except OSError:
        return f"0-{max((os.cpu_count() or 1) - 1, 0)}"


class ExitListener:
    """A netlink socket registered for every CPU's exit notifications."""

    def __init__(self, sock: socket.socket, family: int, mask: str) -> None:
        self.sock = sock
        self.family = family
        self.mask = mask
        self.overflows = 0  # times the kernel dropped records (ENOBUFS): some exits are lost
        self.messages = 0  # records read (any process on the machine)
        self.drain_cpu_ns = 0  # circuit's CPU spent reading and parsing them
        self.rcvbuf = 0

    @classmethod
    def open(cls) -> ExitListener | str:
        """A registered listener, or why there is none (one line)."""
        if os.environ.get(ENV_SWITCH, "1") == "0":
            return f"off ({ENV_SWITCH}=0)"
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        except (OSError, AttributeError) as e:
            return f"unavailable: no generic netlink ({e})"
        try:
            sock.bind((0, 0))
            family = cls._family(sock)
            if family is None:
                raise OSError("no TASKSTATS family (CONFIG_TASKSTATS off)")
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF_BYTES)  # SO_RCVBUFFORCE (root)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            mask = _cpumask()
            me = cls(sock, family, mask)
            me.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            err = me._command(TASKSTATS_CMD_ATTR_REGISTER_CPUMASK)
            if err:
                raise OSError(err, os.strerror(err))
            why = me._self_test()
            if why:
                me.close()
                return f"unavailable: {why}"
            return me
        except OSError as e:
            sock.close()
            if e.errno in (errno.EPERM, errno.EACCES):
                return "unavailable: needs root (CAP_NET_ADMIN)"
            if e.errno == errno.EINVAL:
                return "unavailable: not in the initial user and pid namespaces (a container)"
            return f"unavailable: {e.strerror or e}"

    @staticmethod
    def _family(sock: socket.socket) -> int | None:
        msg = struct.pack("BBH", CTRL_CMD_GETFAMILY, 1, 0) + _nla(
            CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"
        )
        sock.send(struct.pack("IHHII", 16 + len(msg), GENL_ID_CTRL, NLM_F_REQUEST, 1, 0) + msg)
        reply = sock.recv(65536)
        if struct.unpack_from("H", reply, 4)[0] == NLMSG_ERROR:
            return None
        return struct.unpack_from("H", _attrs(reply, 20)[CTRL_ATTR_FAMILY_ID])[0]

    def _command(self, attr: int) -> int:
        """Register or deregister; the errno the kernel answers (0: done)."""
        req = struct.pack("BBH", TASKSTATS_CMD_GET, 1, 0) + _nla(attr, self.mask.encode() + b"\0")
        # NLM_F_ACK: the kernel answers with an error message, 0 for success.
        hdr = struct.pack("IHHII", 16 + len(req), self.family, NLM_F_REQUEST | 4, 2, 0)
        self.sock.send(hdr + req)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            reply = self.sock.recv(65536)
            _n, kind, _flags, seq = struct.unpack_from("IHHI", reply, 0)
            if kind == NLMSG_ERROR and seq == 2:
                (code,) = struct.unpack_from("i", reply, 16)
                return -code
        return errno.ETIMEDOUT

    def _self_test(self) -> str:
        """Start a thread that exits at once and wait for its record: proves
        delivery and that the pids mean what /proc says."""
        box: list[int] = []
        t = threading.Thread(target=lambda: box.append(threading.get_native_id()))
        t.start()
        t.join()
        deadline = time.monotonic() + SELF_TEST_S
        self.sock.settimeout(SELF_TEST_S)
        try:
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(1 << 20)
                except TimeoutError:
                    break
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        continue
                    raise
                for rec in parse_messages(data):
                    if rec.tid == box[0]:
                        return ""
        finally:
            self.sock.settimeout(None)
        return "no exit record arrived for a test thread"

    def drain(self) -> list[Exit]:
        """Every record queued since the last drain, without blocking."""
        c0 = time.thread_time_ns()
        out: list[Exit] = []
        sock = self.sock
        while True:
            try:
                data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overflows += 1  # the socket overflowed: records were dropped
                    continue
                break
            recs = parse_messages(data)
            self.messages += len(recs)
            out.extend(recs)
        self.drain_cpu_ns += time.thread_time_ns() - c0
        return out

    def close(self) -> None:
        try:
            self._command(TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK)
        except OSError:
            pass  # the kernel drops a listener whose socket is gone anyway
        self.sock.close()


class ExitFilter:
    """Keeps the records of the traced tree: a thread of a traced process, or
    a process whose parent is traced or was itself kept (a child, or a
    grandchild, born and dead between two samples).

    A child's record can arrive before its parent's is known (the parent
    born between samples too): unmatched records wait ``HOLD_NS`` for a
    parent to appear, then are dropped.
    """

    HOLD_NS = 2_000_000_000
    HOLD_MAX = 100_000

    def __init__(self) -> None:
        self.kept_pids: set[int] = set()  # processes known only from their exit records
        # In arrival order, so the expired leave from the left: a drain costs
        # what arrived, not every exit on the machine in the last HOLD_NS
        # (a threaded server next door ends hundreds of threads a second).
        self._held: deque[tuple[int, Exit]] = deque(maxlen=self.HOLD_MAX)
        self._known = (0, 0)  # sizes of (traced, kept_pids) when the held were last tried

    def keep(self, recs: list[Exit], traced: set[int], t_ns: int) -> list[Exit]:
        """The records of ``recs`` (and of those held) that belong to the tree.

        ``traced`` only grows (every pid ever traced): while neither it nor
        the kept pids grew, the held records cannot match and are not tried
        again (every exit on the machine is held a while)."""
        out: list[Exit] = []
        rest = self._match([(t_ns, r) for r in recs], traced, out)
        held = self._held
        if (len(traced), len(self.kept_pids)) != self._known:
            rest = self._match([*held, *rest], traced, out)
            held.clear()
        held.extend(rest)
        while held and t_ns - held[0][0] >= self.HOLD_NS:
            held.popleft()
        self._known = (len(traced), len(self.kept_pids))
        return out

    def _match(
        self, pending: list[tuple[int, Exit]], traced: set[int], out: list[Exit]
    ) -> list[tuple[int, Exit]]:
        """Move the tree's records of ``pending`` to ``out`` (until no more
        match: a kept child lets its own children match); the rest."""
        changed = True
        while changed and pending:
            changed = False
            rest: list[tuple[int, Exit]] = []
            for t, r in pending:
                pid = r.pid or (r.tid if r.tid in traced else 0)
                if pid in traced or pid in self.kept_pids:
                    out.append(r if r.pid else r._replace(pid=pid))
                elif r.ppid in traced or r.ppid in self.kept_pids:
                    if pid:
                        self.kept_pids.add(pid)
                        changed = True
                    out.append(r if r.pid else r._replace(pid=pid))
                else:
                    rest.append((t, r))
            pending = rest
        return pending


def _last_pid() -> int:
    """The last pid the kernel handed out (any task on the machine); -1 if unknown."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[4])
    except (OSError, ValueError, IndexError):
        return -1


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 22


def exits_meta(listener: ExitListener | str) -> dict[str, Any]:
    """meta.json's ``exits`` at the start: the source, and the pid counter."""
    source = "taskstats" if isinstance(listener, ExitListener) else listener
    return {"source": source, "last_pid_start": _last_pid()}


def exits_end_meta(start: dict[str, Any], sampler: Any) -> dict[str, Any]:
    """meta.json's ``exits`` at the end (docs/format.md): what the source
    brought and lost, and how many pids the machine handed out meanwhile."""
    out = dict(start)
    first, last = out.get("last_pid_start", -1), _last_pid()
    out["last_pid_end"] = last
    out["pid_max"] = _pid_max()
    # Pids wrap at pid_max (back to 300 or so): one wrap is counted right.
    out["pids_allocated"] = (last - first) % _pid_max() if first >= 0 and last >= 0 else -1
    listener = sampler.exits
    if listener is not None:
        out.update(
            records_kept=sampler.exit_rows,
            records_read=listener.messages,
            overflows=listener.overflows,
            drain_cpu_s=round(listener.drain_cpu_ns / 1e9, 6),
        )
    return out
