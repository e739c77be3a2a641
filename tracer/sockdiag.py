"""What a socket is: its protocol, local and remote address, from its inode.

The kernel's socket-diagnostics netlink interface (``NETLINK_SOCK_DIAG``,
sock_diag(7)) answers this per socket: a unix socket is asked for by inode
(one request, one reply), inet sockets by a dump of one family and protocol
filtered to the states a socket with an fd can be in (no TIME_WAIT, no
SYN_RECV minisockets), matched by inode.  That costs what the traced
process's own sockets cost, where the /proc/PID/net/{tcp,udp,unix} tables
list every socket of the network namespace: a crawler leaves thousands in
TIME_WAIT, and reading and parsing them cost ~0.1 s per look.

Which query to send comes from the socket's ``system.sockprotoname``
attribute (getxattr on /proc/PID/fd/N: ``TCP``, ``UDPv6``, ``UNIX-STREAM``),
so a look asks only what it needs.  A netlink socket sees its own network
namespace only: a target in another one, or a kernel without the
interface, is answered from its /proc/PID/net tables instead
(:func:`read_proc_sockets`).

Where circuit may copy the target's fds (tracer/sockpeek.py), TCP and UDP
sockets are asked through the copy instead: a dump walks the kernel's whole
socket hash, a copy costs only what its socket costs.
:class:`SocketLookup` chooses.

The message builders and parsers are pure functions of bytes, unit-tested
on canned replies; :class:`SockDiag` does the I/O.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from . import procfs, sockpeek
from .sockpeek import SocketPeek

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER = 0x1, 0x4
UNIX_DIAG_NAME, UNIX_DIAG_PEER = 0, 2
NO_COOKIE = 0xFFFFFFFF  # INET_DIAG_NOCOOKIE: match any socket with this inode

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_UNIX_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
_UNIX_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie[2]
_INET_REQ = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states (+ the sockid)
_RTA = struct.Struct("=HH")  # rtattr: len, type
# inet_diag_msg: family, state, timer, retrans, then inet_diag_sockid (ports
# and addresses in network order), expires, rqueue, wqueue, uid, inode.
_INET_HEAD = struct.Struct("=BBBB")
_PORTS = struct.Struct("!HH")
_INET_INODE_AT = 4 + 48 + 16  # offset of idiag_inode in inet_diag_msg
INET_MSG_LEN = _INET_INODE_AT + 4

TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_TIME_WAIT = 1, 2, 3, 6
TCP_CLOSE, TCP_LISTEN, TCP_NEW_SYN_RECV, TCP_BOUND_INACTIVE = 7, 10, 12, 13
# Every state but those of sockets no fd refers to (time-wait and request
# minisockets); TCP_BOUND_INACTIVE asks for bound-only sockets too (Linux >=
# 6.5; they are reported as TCP_CLOSE).
TCP_FD_STATES = ((1 << 14) - 1) & ~(
    (1 << TCP_TIME_WAIT) | (1 << TCP_SYN_RECV) | (1 << TCP_NEW_SYN_RECV)
)
ALL_STATES = 0xFFFFFFFF

_STATE_NAMES = {int(k, 16): v for k, v in procfs.TCP_STATES.items()}
# A copy costs ~15 us a socket, a dump 1-3 ms whatever the number
# (benchmarks/socket_copy.py): beyond this many sockets in one lookup (a
# server's first scan), dumps are cheaper.
COPY_MOST = 100
_UNIX_TYPES = {
    socket.SOCK_STREAM: "stream",
    socket.SOCK_DGRAM: "dgram",
    socket.SOCK_SEQPACKET: "seqpacket",
}

# system.sockprotoname -> (family, protocol) of the inet dump that finds it.
INET_KINDS = {
    "TCP": (socket.AF_INET, socket.IPPROTO_TCP),
    "TCPv6": (socket.AF_INET6, socket.IPPROTO_TCP),
    "UDP": (socket.AF_INET, socket.IPPROTO_UDP),
    "UDPv6": (socket.AF_INET6, socket.IPPROTO_UDP),
}


class Sock(NamedTuple):
    """A socket as the fds table records it; ``settled``: nothing more to
    learn by looking again (listening, connected, or not a kind that
    connects), else it is looked up again at later scans."""

    proto: str
    local: str
    remote: str
    settled: bool = True


# ------------------------------------------------------------ pure: messages


def unix_request(seq: int, inode: int) -> bytes:
    """Ask for one unix socket by inode, with its name and its peer's inode."""
    body = _UNIX_REQ.pack(
        socket.AF_UNIX,
        0,
        0,
        ALL_STATES,
        inode,
        UDIAG_SHOW_NAME | UDIAG_SHOW_PEER,
        NO_COOKIE,
        NO_COOKIE,
    )
    return (
        _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0)
        + body
    )


def inet_request(seq: int, family: int, protocol: int, states: int) -> bytes:
    """Dump the ``family``/``protocol`` sockets in ``states`` (a bit per state)."""
    sockid = bytes(48)  # inet_diag_sockid: all zero, ignored by a dump
    body = _INET_REQ.pack(family, protocol, 0, 0, states) + sockid
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


def messages(buf: bytes, seq: int) -> Iterator[tuple[int, memoryview]]:
    """(type, payload) of each netlink message in ``buf`` answering ``seq``
    (a stale reply to an earlier request is skipped)."""
    view = memoryview(buf)
    off, n = 0, len(buf)
    while off + _NLMSGHDR.size <= n:
        length, typ, _flags, mseq, _pid = _NLMSGHDR.unpack_from(buf, off)
        if length < _NLMSGHDR.size or off + length > n:
            return  # truncated or malformed: nothing more to trust
        if mseq == seq:
            yield typ, view[off + _NLMSGHDR.size : off + length]
        off += (length + 3) & ~3


def error_code(payload: memoryview) -> int:
    """The (negative) errno of an NLMSG_ERROR payload; 0 is an ack."""
    return struct.unpack_from("=i", payload, 0)[0] if len(payload) >= 4 else -1


def attributes(payload: memoryview, start: int) -> dict[int, memoryview]:
    """rtattr type -> value, from ``start`` to the end of ``payload``."""
    out: dict[int, memoryview] = {}
    off, n = start, len(payload)
    while off + _RTA.size <= n:
        length, typ = _RTA.unpack_from(payload, off)
        if length < _RTA.size or off + length > n:
            break
        out[typ] = payload[off + _RTA.size : off + length]
        off += (length + 3) & ~3
    return out


def unix_name(raw: bytes) -> str:
    """A unix socket's name as /proc/net/unix shows it: a path, or ``@name``
    for an abstract one (whose NULs are shown as ``@``); "" if unnamed."""
    if not raw:
        return ""
    if raw[0] == 0:
        return "@" + raw[1:].replace(b"\0", b"@").decode("utf-8", procfs.NAME_ERRORS)
    return raw.split(b"\0", 1)[0].decode("utf-8", procfs.NAME_ERRORS)


class UnixInfo(NamedTuple):
    inode: int
    type: int
    state: int
    name: str
    peer: int  # the peer's inode; 0 if none, or if it has none yet (not accepted)
    has_peer: bool


def parse_unix(payload: memoryview) -> UnixInfo | None:
    """A unix_diag_msg and its NAME and PEER attributes."""
    if len(payload) < _UNIX_MSG.size:
        return None
    family, typ, state, _pad, ino, _c0, _c1 = _UNIX_MSG.unpack_from(payload, 0)
    if family != socket.AF_UNIX:
        return None
    attrs = attributes(payload, _UNIX_MSG.size)
    name = unix_name(bytes(attrs[UNIX_DIAG_NAME])) if UNIX_DIAG_NAME in attrs else ""
    peer_raw = attrs.get(UNIX_DIAG_PEER)
    peer = (
        struct.unpack_from("=I", peer_raw, 0)[0]
        if peer_raw is not None and len(peer_raw) >= 4
        else 0
    )
    return UnixInfo(ino, typ, state, name, peer, peer_raw is not None)


def unix_sock(info: UnixInfo, peer_name: str | None) -> Sock:
    """The fds row of a unix socket; ``peer_name``: its peer's name, None if
    it has a peer whose name could not be read (not accepted yet)."""
    kind = _UNIX_TYPES.get(info.type, str(info.type))
    if info.type == socket.SOCK_DGRAM:
        # Connectionless: "connected" only fixes its default destination.
        remote = peer_name or ""
        return Sock(
            f"unix {kind}", info.name, remote, settled=bool(info.has_peer and peer_name is not None)
        )
    state = _STATE_NAMES.get(info.state, str(info.state))
    if info.state == TCP_LISTEN:
        return Sock(f"unix {kind} {state}", info.name, "")
    connected = info.state == TCP_ESTABLISHED and info.has_peer
    return Sock(
        f"unix {kind} {state}",
        info.name,
        peer_name or "",
        settled=connected and peer_name is not None,
    )


def _inet_addr(family: int, raw: memoryview, port: int) -> str:
    if family == socket.AF_INET:
        return f"{socket.inet_ntop(socket.AF_INET, bytes(raw[:4]))}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, bytes(raw[:16]))}]:{port}"


def inet_sock(payload: memoryview, protocol: int) -> tuple[int, Sock] | None:
    """(inode, Sock) from an inet_diag_msg."""
    if len(payload) < INET_MSG_LEN:
        return None
    family, state, _timer, _retrans = _INET_HEAD.unpack_from(payload, 0)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    sport, dport = _PORTS.unpack_from(payload, 4)
    src, dst = payload[8:24], payload[24:40]
    inode = struct.unpack_from("=I", payload, _INET_INODE_AT)[0]
    v6 = "6" if family == socket.AF_INET6 else ""
    local = _inet_addr(family, src, sport)
    connected = dport != 0 or any(dst)
    remote = _inet_addr(family, dst, dport) if connected else ""
    if protocol == socket.IPPROTO_UDP:
        return inode, Sock(f"udp{v6}", local, remote, settled=connected)
    name = _STATE_NAMES.get(state, str(state))
    settled = state not in (TCP_CLOSE,)  # bound only: it may listen or connect
    return inode, Sock(f"tcp{v6} {name}", local, remote, settled)


def inode_of(payload: memoryview) -> int:
    """The inode of an inet_diag_msg, without parsing the rest."""
    return (
        struct.unpack_from("=I", payload, _INET_INODE_AT)[0] if len(payload) >= INET_MSG_LEN else -1
    )


def protoname(raw: bytes) -> str:
    """system.sockprotoname's value, without its NUL."""
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


# ------------------------------------------------------------------ the I/O


class SockDiag:
    """A NETLINK_SOCK_DIAG socket in circuit's own network namespace."""

    RECV = 1 << 16

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        self.sock.settimeout(2.0)  # the kernel answers at once; never hang the sampler
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _ask(self, msg: bytes, seq: int, dump: bool) -> Iterator[tuple[int, memoryview]]:
        self.sock.send(msg)
        while True:
            buf = self.sock.recv(self.RECV)
            if not buf:
                return
            for typ, payload in messages(buf, seq):
                if typ == NLMSG_DONE:
                    return
                if typ == NLMSG_ERROR:
                    code = error_code(payload)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return
                yield typ, payload
                if not dump:
                    return

    def unix(self, inode: int) -> UnixInfo | None:
        """One unix socket by inode; None if there is none (closed, or another namespace's)."""
        self.seq += 1
        try:
            for _typ, payload in self._ask(unix_request(self.seq, inode), self.seq, dump=False):
                return parse_unix(payload)
        except FileNotFoundError:
            return None
        return None

    def inet(
        self, family: int, protocol: int, inodes: Iterable[int], bound: bool = False
    ) -> dict[int, Sock]:
        """The sockets of ``inodes`` among this family and protocol's;
        ``bound``: bound-only TCP sockets too (the kernel walks its bind
        hash for them: ~0.4 ms more, on a table sized by memory)."""
        want = set(inodes)
        out: dict[int, Sock] = {}
        states = ALL_STATES
        if protocol == socket.IPPROTO_TCP:
            states = TCP_FD_STATES if bound else TCP_FD_STATES & ~(1 << TCP_BOUND_INACTIVE)
        self.seq += 1
        for _typ, payload in self._ask(
            inet_request(self.seq, family, protocol, states), self.seq, dump=True
        ):
            if inode_of(payload) in want:  # (most of the dump is other processes')
                found = inet_sock(payload, protocol)
                if found is not None:
                    out[found[0]] = found[1]
        return out


# ------------------------------------------------------- the whole lookup


def read_proc_sockets(pid: int, names: Iterable[str]) -> dict[int, Sock]:
    """The fallback: the /proc/PID/net tables of the protocols in ``names``
    (sockprotoname values; "" for unknown: all of them)."""
    names = set(names)
    every = "" in names
    files: list[tuple[str, str, bool]] = [
        (f, p, v6)
        for f, p, v6, name in (
            ("tcp", "tcp", False, "TCP"),
            ("tcp6", "tcp", True, "TCPv6"),
            ("udp", "udp", False, "UDP"),
            ("udp6", "udp", True, "UDPv6"),
        )
        if every or name in names
    ]
    out: dict[int, Sock] = {}
    for f, proto, v6 in files:
        try:
            with open(f"/proc/{pid}/net/{f}", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        for inode, (p, local, remote) in procfs.parse_net_inet(data, proto, v6).items():
            settled = (bool(remote) or p.endswith(" LISTEN")) and not p.endswith(" CLOSE")
            out[inode] = Sock(p, local, remote, settled)
    if every or any(n.startswith("UNIX") for n in names):
        try:
            with open(f"/proc/{pid}/net/unix", "rb") as fh:
                data = fh.read()
        except OSError:
            data = b""
        for inode, (p, local, remote) in procfs.parse_net_unix(data).items():
            # The table names no peer: a connected socket is as settled as it gets here.
            settled = not (p.endswith(" CLOSE") or p == "unix dgram")
            out[inode] = Sock(p, local, remote, settled)
    return out


class SocketLookup:
    """Resolves a traced process's sockets: TCP and UDP ones through a copy
    of their fd (:mod:`.sockpeek`) where it can be made, the others and
    those by netlink (:class:`SockDiag`), and by the process's /proc/PID/net
    tables where netlink cannot see them (another network namespace)."""

    def __init__(self, copy: bool | None = None) -> None:
        self.diag: SockDiag | None = None
        self.tried = False
        # TCP and UDP sockets are asked through a copy of their fd
        # (tracer/sockpeek.py) where the kernel and our rights allow: a
        # dump per scan walks the whole socket table.
        self.peek: SocketPeek | None = None
        if sockpeek.enabled() if copy is None else copy:
            try:
                self.peek = SocketPeek()
            except (sockpeek.Unavailable, OSError):
                self.peek = None
        # Inodes the last lookup did not find: asked again, they may be
        # bound-only TCP sockets, which only a costlier dump lists.
        self.missed: set[int] = set()
        try:
            self.own_netns = os.stat("/proc/self/ns/net").st_ino
        except OSError:
            self.own_netns = -1

    def close(self) -> None:
        if self.diag is not None:
            self.diag.close()
            self.diag = None
        if self.peek is not None:
            self.peek.close()

    def forget(self, pid: int) -> None:
        """``pid`` is no longer traced: release what is held for it (its pidfd)."""
        if self.peek is not None:
            self.peek.forget(pid)

    def _netlink(self, pid: int) -> SockDiag | None:
        """The netlink socket, if it sees ``pid``'s sockets (same namespace)."""
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != self.own_netns:
                return None
        except OSError:
            return None
        if not self.tried:
            self.tried = True
            try:
                self.diag = SockDiag()
            except OSError:
                self.diag = None  # no NETLINK_SOCK_DIAG here: /proc/PID/net
        return self.diag

    def resolve(self, pid: int, fds: dict[int, int]) -> dict[int, Sock]:
        """inode -> Sock for the sockets ``fds`` (fd -> inode) of ``pid``
        that could be found; the others have no address yet, or are gone."""
        out: dict[int, Sock] = {}
        if self.peek is not None and 0 < len(fds) <= COPY_MOST:
            try:
                found, fds = self.peek.resolve(pid, fds)
                out.update((inode, Sock(*got)) for inode, got in found.items())
            except sockpeek.Unavailable:
                if self.peek.off:
                    self.peek.close()
                    self.peek = None
            if not fds:
                return out
        return out | self._resolve(pid, fds)

    def _resolve(self, pid: int, fds: dict[int, int]) -> dict[int, Sock]:
        names: dict[int, str] = {}
        for fd, inode in fds.items():
            try:
                raw = os.getxattr(f"/proc/{pid}/fd/{fd}", "system.sockprotoname")
            except OSError:
                raw = b""  # closed since, or no such attribute: ask everywhere
            names[inode] = protoname(raw)
        diag = self._netlink(pid)
        if diag is None:
            found = read_proc_sockets(pid, names.values())
            return {i: found[i] for i in names if i in found}
        try:
            return self._ask(diag, names)
        except OSError:
            self.close()  # broken: /proc/PID/net from now on
            found = read_proc_sockets(pid, names.values())
            return {i: found[i] for i in names if i in found}

    def _ask(self, diag: SockDiag, names: dict[int, str]) -> dict[int, Sock]:
        out: dict[int, Sock] = {}
        inet: dict[str, list[int]] = {}
        unix: list[int] = []
        for inode, name in names.items():
            if name in INET_KINDS:
                inet.setdefault(name, []).append(inode)
            elif name.startswith("UNIX") or not name:
                unix.append(inode)
            else:  # netlink, packet, raw...: no addresses to tell
                out[inode] = Sock(name.lower(), "", "")
        for name, inodes in inet.items():
            bound = not self.missed.isdisjoint(inodes)
            out.update(diag.inet(*INET_KINDS[name], inodes, bound))
        unknown = [i for i in names if not names[i] and i not in out]
        for inode in unix:
            info = diag.unix(inode)
            if info is None:
                continue
            peer_name: str | None = ""
            if info.peer:
                peer = diag.unix(info.peer)
                peer_name = peer.name if peer is not None else None
            elif info.has_peer:
                peer_name = None  # a peer not accepted yet: its name comes later
            out[inode] = unix_sock(info, peer_name)
        for inode in unknown:  # no protocol name: try the inet dumps too
            if inode in out:
                continue
            for family, protocol in INET_KINDS.values():
                found = diag.inet(family, protocol, [inode], inode in self.missed)
                if found:
                    out.update(found)
                    break
        self.missed = {i for i in names if i not in out}
        return out
