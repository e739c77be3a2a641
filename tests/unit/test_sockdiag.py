"""tracer/sockdiag.py's pure half: netlink requests built, replies parsed,
on canned bytes laid out as linux/sock_diag.h, inet_diag.h and unix_diag.h
say (the live lookups are checked against getsockname/getpeername in
tests/integration/test_socket_addresses.py)."""

from __future__ import annotations

import socket
import struct

from circuit.tracer import sockdiag as sd


def nlmsg(typ: int, seq: int, payload: bytes, flags: int = 2) -> bytes:
    body = payload + b"\0" * (-len(payload) % 4)
    return struct.pack("=IHHII", 16 + len(payload), typ, flags, seq, 0) + body


def rta(typ: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), typ) + value + b"\0" * (-len(value) % 4)


def inet_msg(
    family: int, state: int, src: bytes, sport: int, dst: bytes, dport: int, inode: int
) -> bytes:
    sockid = struct.pack("!HH", sport, dport) + src.ljust(16, b"\0") + dst.ljust(16, b"\0")
    sockid += struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    return (
        struct.pack("=BBBB", family, state, 0, 0)
        + sockid
        + struct.pack("=IIIII", 0, 0, 0, 1000, inode)
    )


def unix_msg(typ: int, state: int, inode: int, attrs: bytes = b"") -> bytes:
    return struct.pack("=BBBBIII", socket.AF_UNIX, typ, state, 0, inode, 1, 2) + attrs


def test_unix_request_layout():
    msg = sd.unix_request(7, 424242)
    length, typ, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, typ, flags, seq, pid) == (len(msg), 20, 1, 7, 0)  # no NLM_F_DUMP: one socket
    fam, proto, _pad, _states, ino, show, c0, c1 = struct.unpack_from("=BBHIIIII", msg, 16)
    assert (fam, proto, ino) == (socket.AF_UNIX, 0, 424242)
    assert show == sd.UDIAG_SHOW_NAME | sd.UDIAG_SHOW_PEER
    assert (c0, c1) == (0xFFFFFFFF, 0xFFFFFFFF)  # any cookie
    assert len(msg) == 16 + 24


def test_inet_request_layout():
    msg = sd.inet_request(3, socket.AF_INET6, socket.IPPROTO_TCP, sd.TCP_FD_STATES)
    _len, typ, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert (typ, flags & 0x300, seq) == (20, 0x300, 3)
    fam, proto, ext, _pad, states = struct.unpack_from("=BBBBI", msg, 16)
    assert (fam, proto, ext) == (socket.AF_INET6, socket.IPPROTO_TCP, 0)
    # No sockets without an fd: time-wait and request minisockets.
    for st in (sd.TCP_TIME_WAIT, sd.TCP_SYN_RECV, sd.TCP_NEW_SYN_RECV):
        assert not states & (1 << st)
    for st in (sd.TCP_ESTABLISHED, sd.TCP_SYN_SENT, sd.TCP_LISTEN, sd.TCP_CLOSE):
        assert states & (1 << st)
    assert len(msg) == 16 + 56


def test_messages_skip_other_sequences_and_stop_at_truncation():
    a = nlmsg(20, 5, b"mine")
    b = nlmsg(20, 4, b"stale")
    buf = b + a + nlmsg(3, 5, b"\0\0\0\0")
    got = [(t, bytes(p)) for t, p in sd.messages(buf, 5)]
    assert got == [(20, b"mine"), (3, b"\0\0\0\0")]
    assert list(sd.messages(a[:-2], 5)) == []  # a cut message is not trusted


def test_error_code():
    assert sd.error_code(memoryview(struct.pack("=i", -2) + bytes(16))) == -2
    assert sd.error_code(memoryview(struct.pack("=i", 0))) == 0


def test_inet_v4_connected_listening_and_bound_only():
    lo = socket.inet_aton("127.0.0.1")
    est = sd.inet_sock(memoryview(inet_msg(2, 1, lo, 50000, lo, 8080, 11)), socket.IPPROTO_TCP)
    assert est == (11, sd.Sock("tcp ESTABLISHED", "127.0.0.1:50000", "127.0.0.1:8080", True))
    lis = sd.inet_sock(memoryview(inet_msg(2, 10, b"", 8080, b"", 0, 12)), socket.IPPROTO_TCP)
    assert lis == (12, sd.Sock("tcp LISTEN", "0.0.0.0:8080", "", True))  # no remote
    bound = sd.inet_sock(memoryview(inet_msg(2, 7, lo, 4000, b"", 0, 13)), socket.IPPROTO_TCP)
    assert bound == (13, sd.Sock("tcp CLOSE", "127.0.0.1:4000", "", False))  # may still connect


def test_inet_v6_and_udp():
    one = socket.inet_pton(socket.AF_INET6, "::1")
    got = sd.inet_sock(memoryview(inet_msg(10, 2, one, 1, one, 443, 21)), socket.IPPROTO_TCP)
    assert got == (21, sd.Sock("tcp6 SYN_SENT", "[::1]:1", "[::1]:443", True))
    lo = socket.inet_aton("127.0.0.1")
    unconn = sd.inet_sock(memoryview(inet_msg(2, 7, lo, 5353, b"", 0, 22)), socket.IPPROTO_UDP)
    assert unconn == (22, sd.Sock("udp", "127.0.0.1:5353", "", False))
    conn = sd.inet_sock(memoryview(inet_msg(10, 1, one, 5, one, 53, 23)), socket.IPPROTO_UDP)
    assert conn == (23, sd.Sock("udp6", "[::1]:5", "[::1]:53", True))
    assert sd.inode_of(memoryview(inet_msg(2, 1, lo, 1, lo, 2, 99))) == 99
    assert sd.inet_sock(memoryview(inet_msg(2, 1, lo, 1, lo, 2, 99)[:40]), 6) is None


def test_unix_names_and_peers():
    path = rta(sd.UNIX_DIAG_NAME, b"/run/app.sock")
    lis = sd.parse_unix(memoryview(unix_msg(socket.SOCK_STREAM, 10, 31, path)))
    assert lis is not None and (lis.inode, lis.name, lis.has_peer) == (31, "/run/app.sock", False)
    assert sd.unix_sock(lis, "") == sd.Sock("unix stream LISTEN", "/run/app.sock", "", True)
    peer = rta(sd.UNIX_DIAG_PEER, struct.pack("=I", 32))
    cli = sd.parse_unix(memoryview(unix_msg(socket.SOCK_STREAM, 1, 33, peer)))
    assert cli is not None and (cli.peer, cli.name) == (32, "")
    assert sd.unix_sock(cli, "/run/app.sock") == sd.Sock(
        "unix stream ESTABLISHED", "", "/run/app.sock", True
    )
    # A peer not accepted yet has no inode: its name is looked up later.
    embryo = sd.parse_unix(memoryview(unix_msg(socket.SOCK_STREAM, 1, 34, rta(2, bytes(4)))))
    assert embryo is not None and embryo.has_peer and embryo.peer == 0
    assert not sd.unix_sock(embryo, None).settled
    # Abstract names are shown as /proc/net/unix does.
    ab = sd.parse_unix(memoryview(unix_msg(socket.SOCK_DGRAM, 7, 35, rta(0, b"\0my\0name"))))
    assert ab is not None and ab.name == "@my@name"
    assert sd.unix_sock(ab, "") == sd.Sock("unix dgram", "@my@name", "", False)  # may connect
    assert sd.parse_unix(memoryview(b"\x02" + bytes(15))) is None  # not AF_UNIX


def test_attributes_stop_at_a_bad_length():
    good = rta(0, b"/a")
    bad = struct.pack("=HH", 200, 2) + b"xxxx"
    attrs = sd.attributes(memoryview(good + bad), 0)
    assert set(attrs) == {0} and bytes(attrs[0]) == b"/a"


def test_protoname():
    assert sd.protoname(b"UNIX-STREAM\0") == "UNIX-STREAM"
    assert sd.protoname(b"TCPv6\0") == "TCPv6"
    assert sd.protoname(b"") == ""
