"""What a TCP or UDP socket is, asked of the socket itself through a copy of its fd.

``pidfd_getfd(2)`` (Linux >= 5.6) puts a copy of a traced process's fd in
circuit's own fd table: the same open file, so the same socket.  Its
protocol, state, local and remote address are then a few ``getsockopt``,
``getsockname`` and ``getpeername`` calls on the copy, which is closed at
once.  That costs what the socket costs (microseconds), where a sock_diag dump
walks the kernel's whole socket hash table (~1-3 ms, whatever the traced
process holds).  It needs the right to ptrace the target
(PTRACE_MODE_ATTACH_REALCREDS: what reading its memory for the GIL needs);
without it (EPERM, ENOSYS) the caller falls back to the dump.

Observer effect, while a copy is held (the few microseconds of one lookup):
the socket has two references, so a ``close()`` by the target does not
release it (no FIN, the port stays bound) until circuit's close, and an
epoll registration of that fd lives as long as the copy.  Hence: the copy
is closed in a ``finally``, never handed to anything else, never wrapped in
a Python socket object (which could set O_NONBLOCK on the shared file under
a default timeout), never shut down.  The copy is checked to be the socket
the scan saw (its inode), since the target may have closed and reused the
number in between.

``CIRCUIT_SOCKET_COPY=0`` turns this off (the sock_diag dump answers).

The steps of one lookup are C (tracer/_sockpeek.c: one call per socket)
where it was built, else ctypes calls (``ask_copy``), which give the same
answers (tests/unit/test_sockpeek.py runs both).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from .procfs import TCP_STATES

ENV_SWITCH = "CIRCUIT_SOCKET_COPY"
# pidfd_getfd has one number on every architecture but alpha (the unified
# syscall table of Linux >= 5.1).
SYS_PIDFD_GETFD = 438
_ARCHES = {"x86_64", "aarch64", "armv7l", "armv8l", "ppc64le", "s390x", "riscv64", "i686"}
TCP_INFO = 11
TCP_CLOSE, TCP_SYN_SENT = 7, 2
_STATE_NAMES = {int(k, 16): v for k, v in TCP_STATES.items()}
_SOCKADDR_LEN = 128  # sizeof(struct sockaddr_storage)


class Inet(NamedTuple):
    """What a copy of a TCP or UDP socket says (addresses as the fds table writes them)."""

    proto: str  # "tcp ESTABLISHED", "tcp6 LISTEN", "udp", "udp6"
    local: str  # "" if not bound
    remote: str  # "" if not connected
    settled: bool  # nothing more to learn by looking again


def enabled() -> bool:
    """Whether the switch lets lookups copy fds (default: yes)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "no", "off", "false")


def sockaddr(raw: bytes) -> str:
    """An AF_INET/AF_INET6 sockaddr as ``host:port`` / ``[v6]:port``; "" for port 0
    with no address (not bound, or not connected)."""
    family = struct.unpack_from("=H", raw, 0)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET:
        addr = raw[4:8]
        host = socket.inet_ntop(socket.AF_INET, addr)
    elif family == socket.AF_INET6:
        addr = raw[8:24]
        host = f"[{socket.inet_ntop(socket.AF_INET6, addr)}]"
    else:
        return ""
    if port == 0 and not any(addr):
        return ""
    return f"{host}:{port}"


def inet(family: int, protocol: int, state: int, local: bytes, peer: bytes | None) -> Inet:
    """The row of a TCP (``state``: tcpi_state) or UDP socket from its own
    getsockname (``local``) and getpeername (``peer``, None: not connected)."""
    v6 = "6" if family == socket.AF_INET6 else ""
    here = sockaddr(local)
    there = sockaddr(peer) if peer is not None else ""
    if protocol == socket.IPPROTO_UDP:
        return Inet(f"udp{v6}", here, there, settled=bool(there))
    name = _STATE_NAMES.get(state, str(state))
    # Bound only (CLOSE) may still listen or connect; a SYN_SENT socket has
    # no peer name yet (getpeername says ENOTCONN until it is established).
    return Inet(f"tcp{v6} {name}", here, there, settled=state not in (TCP_CLOSE, TCP_SYN_SENT))


class Unavailable(Exception):
    """Copying this process's fds is not possible (no syscall, no right)."""


class _Libc:
    """The libc calls on a raw fd (no Python socket object around it)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.syscall = libc.syscall
        self.syscall.restype = ctypes.c_long
        self.getsockopt = libc.getsockopt
        self.getsockopt.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_uint32),
        ]
        self.getsockname = libc.getsockname
        self.getpeername = libc.getpeername
        for f in (self.getsockname, self.getpeername):
            f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
        self.buf = ctypes.create_string_buffer(_SOCKADDR_LEN)
        self.len = ctypes.c_uint32()
        self.int = ctypes.c_int()
        self.int_len = ctypes.c_uint32()

    def getfd(self, pidfd: int, fd: int) -> int:
        r = self.syscall(
            ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0)
        )
        if r < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return int(r)

    def opt(self, fd: int, level: int, name: int) -> int:
        self.int_len.value = 4
        if self.getsockopt(fd, level, name, ctypes.byref(self.int), ctypes.byref(self.int_len)):
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return self.int.value

    def tcp_state(self, fd: int) -> int:
        # tcp_info's first byte is tcpi_state; the kernel copies only what is asked.
        self.len.value = 1
        if self.getsockopt(fd, socket.IPPROTO_TCP, TCP_INFO, self.buf, ctypes.byref(self.len)):
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return self.buf.raw[0]

    def name(self, fd: int, peer: bool) -> bytes | None:
        """getsockname/getpeername; None for a socket with no peer (ENOTCONN)."""
        self.len.value = _SOCKADDR_LEN
        f = self.getpeername if peer else self.getsockname
        if f(fd, self.buf, ctypes.byref(self.len)):
            e = ctypes.get_errno()
            if peer and e == errno.ENOTCONN:
                return None
            raise OSError(e, os.strerror(e))
        return self.buf.raw[: self.len.value]


def _c_peek() -> Callable[[int, int, int], Any] | None:
    """tracer/_sockpeek.c's ``peek``, or None (not built here)."""
    try:
        from ._sockpeek import peek  # type: ignore[import-not-found]
    except ImportError:
        return None
    return peek


def ask_copy(libc: _Libc, copy: int, inode: int) -> Inet | bool | None:
    """What the socket behind the fd ``copy`` is: an :class:`Inet`; None if
    it is not the socket ``inode`` (the number was closed and reused since
    the scan); False if it is not a TCP or UDP socket (asked elsewhere)."""
    if os.fstat(copy).st_ino != inode:
        return None
    local = libc.name(copy, False)
    family = struct.unpack_from("=H", local, 0)[0] if local and len(local) >= 2 else -1
    if family not in (socket.AF_INET, socket.AF_INET6):
        return False
    # IPPROTO_TCP is only ever a SOCK_STREAM socket, IPPROTO_UDP a SOCK_DGRAM one.
    protocol = libc.opt(copy, socket.SOL_SOCKET, socket.SO_PROTOCOL)
    if protocol == socket.IPPROTO_TCP:
        state = libc.tcp_state(copy)
    elif protocol == socket.IPPROTO_UDP:
        state = 0
    else:
        return False  # raw, SCTP, UDP-Lite, MPTCP...: named by their protocol elsewhere
    return inet(family, protocol, state, local, libc.name(copy, True))


class SocketPeek:
    """Copies of traced processes' socket fds, one pidfd per process."""

    def __init__(self) -> None:
        if not hasattr(os, "pidfd_open") or platform.machine() not in _ARCHES:
            raise Unavailable("no pidfd_getfd here")
        self.libc = _Libc()
        self.peek = _c_peek()
        self.pidfds: dict[int, int] = {}
        self.denied: set[int] = set()  # processes whose fds cannot be copied
        self.off = False  # the kernel has no pidfd_getfd: never again

    def close(self) -> None:
        for pid in list(self.pidfds):
            self.forget(pid)

    def forget(self, pid: int) -> None:
        """The process is no longer traced (or has gone): close its pidfd."""
        self.denied.discard(pid)
        fd = self.pidfds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def _pidfd(self, pid: int) -> int:
        fd = self.pidfds.get(pid)
        if fd is None:
            fd = self.pidfds[pid] = os.pidfd_open(pid)
        return fd

    def resolve(self, pid: int, fds: dict[int, int]) -> tuple[dict[int, Inet], dict[int, int]]:
        """(inode -> Inet for the TCP and UDP sockets of ``fds`` (fd -> inode),
        the fds left to ask elsewhere: not TCP or UDP).  An fd closed since
        the scan is in neither.  Raises :class:`Unavailable` when this
        process's fds cannot be copied (the caller asks the dump for all)."""
        if pid in self.denied:
            raise Unavailable(pid)
        found: dict[int, Inet] = {}
        rest: dict[int, int] = {}
        retried = False
        for fd, inode in fds.items():
            while True:
                try:
                    got = self._ask(self._pidfd(pid), fd, inode)
                except OSError as e:
                    if e.errno == errno.EBADF:
                        break  # closed since the scan: gone
                    if e.errno == errno.ESRCH and not retried:
                        # The pidfd's process has gone: a new one under this
                        # pid (not forgotten yet) gets a fresh pidfd once.
                        retried = True
                        self.forget(pid)
                        continue
                    if e.errno == errno.ESRCH:
                        return found, {}
                    if e.errno in (errno.EPERM, errno.EACCES):
                        self.denied.add(pid)
                    elif e.errno == errno.ENOSYS:
                        self.off = True
                    raise Unavailable(pid) from e
                if got is False:
                    rest[fd] = inode
                elif got is not None:
                    found[inode] = got
                break
        return found, rest

    def _ask(self, pidfd: int, fd: int, inode: int) -> Inet | bool | None:
        """ask_copy on a copy of ``fd``; OSError: the copy failed."""
        if self.peek is not None:
            got = self.peek(pidfd, fd, inode)
            return inet(*got) if isinstance(got, tuple) else got
        copy = self.libc.getfd(pidfd, fd)
        try:
            return ask_copy(self.libc, copy, inode)
        except OSError:
            return False  # an odd socket: let the other lookup say what it is
        finally:
            os.close(copy)
