"""tracer/sockpeek.py: sockaddr formatting on canned bytes, and the inode
check on real sockets of this very process (a copy of our own fd: the
number closed and reused for another socket must not be taken for the one
the scan saw, and no copy may be left open)."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from circuit.tracer import sockpeek


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _inode(fd: int) -> int:
    return os.fstat(fd).st_ino


@pytest.fixture(params=["c", "ctypes"])
def peek(request):
    try:
        p = sockpeek.SocketPeek()
    except sockpeek.Unavailable:
        pytest.skip("no pidfd_getfd here")
    if request.param == "ctypes":
        p.peek = None
    elif p.peek is None:
        pytest.skip("tracer/_sockpeek.c is not built here")
    yield p
    p.close()


def test_sockaddr_formats_as_the_fds_table_writes_them():
    v4 = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 8080) + bytes([10, 0, 0, 1])
    assert sockpeek.sockaddr(v4 + bytes(8)) == "10.0.0.1:8080"
    v6 = struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 443) + bytes(4)
    v6 += socket.inet_pton(socket.AF_INET6, "fe80::1") + bytes(4)
    assert sockpeek.sockaddr(v6) == "[fe80::1]:443"
    unbound = struct.pack("=H", socket.AF_INET) + bytes(14)
    assert sockpeek.sockaddr(unbound) == ""
    any_port = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 53) + bytes(12)
    assert sockpeek.sockaddr(any_port) == "0.0.0.0:53"


def test_inet_rows_settle_as_the_dump_rows_do():
    local = (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", 1)
        + bytes([127, 0, 0, 1, 0] + [0] * 7)
    )
    row = sockpeek.inet(socket.AF_INET, socket.IPPROTO_TCP, 10, local, None)
    assert row == ("tcp LISTEN", "127.0.0.1:1", "", True)
    assert not sockpeek.inet(socket.AF_INET, socket.IPPROTO_TCP, 7, local, None).settled
    assert not sockpeek.inet(socket.AF_INET, socket.IPPROTO_TCP, 2, local, None).settled
    udp = sockpeek.inet(socket.AF_INET6, socket.IPPROTO_UDP, 0, local, None)
    assert udp.proto == "udp6" and not udp.settled
    assert sockpeek.inet(socket.AF_INET, socket.IPPROTO_UDP, 0, local, local).settled


def test_a_reused_number_is_not_taken_for_the_socket_the_scan_saw(peek):
    a = socket.socket()
    a.bind(("127.0.0.1", 0))
    a.listen()
    fd, seen = a.fileno(), _inode(a.fileno())
    before = _fds()
    found, rest = peek.resolve(os.getpid(), {fd: seen})
    assert found[seen].proto == "tcp LISTEN" and not rest
    assert found[seen].local == f"127.0.0.1:{a.getsockname()[1]}"
    # The target closes it and the number goes to another socket.
    a.close()
    b = socket.socket(type=socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    try:
        assert b.fileno() == fd
        found, rest = peek.resolve(os.getpid(), {fd: seen})
        assert found == {} and rest == {}  # gone: the next scan sees the new one
        # Asked by its own inode, it is the UDP socket.
        found, _ = peek.resolve(os.getpid(), {fd: _inode(fd)})
        assert found[_inode(fd)].proto == "udp"
    finally:
        b.close()
    # A number closed since the scan: gone too.
    found, rest = peek.resolve(os.getpid(), {fd: seen})
    assert found == {} and rest == {}
    # Our fds: the listener closed, the pidfd opened, no copy left.
    after = _fds()
    assert str(peek.pidfds[os.getpid()]) in after
    assert len(after) == len(before), (before, after)


def test_other_sockets_are_left_to_the_other_lookup(peek):
    x, y = socket.socketpair()
    try:
        fds = {x.fileno(): _inode(x.fileno())}
        assert peek.resolve(os.getpid(), fds) == ({}, fds)
    finally:
        x.close()
        y.close()


def test_the_switch(monkeypatch):
    monkeypatch.setenv(sockpeek.ENV_SWITCH, "0")
    assert not sockpeek.enabled()
    monkeypatch.setenv(sockpeek.ENV_SWITCH, "1")
    assert sockpeek.enabled()
    monkeypatch.delenv(sockpeek.ENV_SWITCH)
    assert sockpeek.enabled()


def test_a_lookup_of_many_sockets_asks_the_dump(peek, monkeypatch):
    """Beyond COPY_MOST sockets in one lookup, one dump is cheaper than the
    copies (benchmarks/socket_copy.py): the copy is not asked; and below
    it, it is (and the dump is not)."""
    from circuit.tracer import sockdiag

    look = sockdiag.SocketLookup(copy=True)
    if look.peek is None:
        pytest.skip("no pidfd_getfd here")
    copied: list[int] = []
    real = look.peek.resolve
    monkeypatch.setattr(
        look.peek, "resolve", lambda pid, fds: copied.append(len(fds)) or real(pid, fds)
    )
    dumped: list[int] = []
    real_inet = sockdiag.SockDiag.inet
    monkeypatch.setattr(
        sockdiag.SockDiag, "inet", lambda *a, **k: dumped.append(1) or real_inet(*a, **k)
    )
    socks = [socket.socket(type=socket.SOCK_DGRAM) for _ in range(sockdiag.COPY_MOST + 1)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        fds = {s.fileno(): _inode(s.fileno()) for s in socks}
        many = look.resolve(os.getpid(), fds)
        assert not copied and dumped
        assert len(many) == len(fds) and all(v.proto == "udp" for v in many.values())
        dumped.clear()
        few = look.resolve(os.getpid(), dict(list(fds.items())[:3]))
        assert copied == [3] and not dumped
        assert few == {i: many[i] for i in few}
    finally:
        for s in socks:
            s.close()
        look.close()


def test_the_c_lookup_says_what_the_ctypes_one_says():
    try:
        p = sockpeek.SocketPeek()
    except sockpeek.Unavailable:
        pytest.skip("no pidfd_getfd here")
    if p.peek is None:
        pytest.skip("tracer/_sockpeek.c is not built here")
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    udp = socket.socket(type=socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    cudp = socket.socket(type=socket.SOCK_DGRAM)
    cudp.connect(udp.getsockname())
    fresh = socket.socket()  # not bound
    x, y = socket.socketpair()
    socks = [lst, cli, srv, udp, cudp, fresh, x]
    if socket.has_ipv6:
        try:
            six = socket.create_server(("::1", 0), family=socket.AF_INET6)
            socks.append(six)
        except OSError:
            pass  # no IPv6 loopback here
    try:
        fds = {s.fileno(): _inode(s.fileno()) for s in socks}
        c = p.resolve(os.getpid(), fds)
        p.peek = None
        assert p.resolve(os.getpid(), fds) == c
        found, rest = c
        assert found[fds[cli.fileno()]].proto == "tcp ESTABLISHED"
        assert found[fds[cli.fileno()]].remote == f"127.0.0.1:{lst.getsockname()[1]}"
        assert found[fds[cudp.fileno()]].remote and found[fds[fresh.fileno()]].local == ""
        assert rest == {x.fileno(): fds[x.fileno()]}
    finally:
        p.close()
        for s in [*socks, y]:
            s.close()
