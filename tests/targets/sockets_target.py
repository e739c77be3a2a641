"""Opens sockets of every kind circuit names, in two phases, and reports
what it holds by its own getsockname()/getpeername().

Phase 1 (at start): a TCP listener with a connected pair, a UDP socket,
an IPv6 TCP listener, a unix stream listener with a connected pair and a
socketpair, a bound unix datagram socket.  Prints ``phase1`` and waits for a
line on stdin.  Phase 2: more of the same, and sockets that only get bound
or connected later (a TCP socket bound only, a unix stream socket not
connected, a UDP and a unix datagram socket not connected); prints
``phase2`` and waits for a line; then connects those, prints one JSON line
{fd: [family, type, sockname, peername]} for every socket it holds, and
waits for stdin to close.  ``DIR`` (argv[1]) holds its unix socket files.
"""

from __future__ import annotations

import json
import os
import socket
import sys

held: list[socket.socket] = []


def keep(*socks: socket.socket) -> None:
    held.extend(socks)


def tcp_pair(family: int, host: str) -> socket.socket:
    lis = socket.socket(family)
    lis.bind((host, 0))
    lis.listen()
    cli = socket.create_connection(lis.getsockname()[:2])
    acc, _ = lis.accept()
    keep(lis, cli, acc)
    return lis


def unix_pair(path: str) -> socket.socket:
    lis = socket.socket(socket.AF_UNIX)
    lis.bind(path)
    lis.listen()
    cli = socket.socket(socket.AF_UNIX)
    cli.connect(path)
    acc, _ = lis.accept()
    keep(lis, cli, acc, *socket.socketpair())
    return lis


def name(addr: object) -> str:
    """An address as circuit writes it: ``host:port``, ``[v6]:port``, a path, ``@abstract``."""
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(addr, bytes):
        return "@" + addr[1:].replace(b"\0", b"@").decode() if addr[:1] == b"\0" else addr.decode()
    return str(addr)


def line() -> None:
    sys.stdout.flush()
    sys.stdin.readline()


def main() -> None:
    d = sys.argv[1]
    tcp_pair(socket.AF_INET, "127.0.0.1")
    udp = socket.socket(type=socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    keep(udp)
    tcp_pair(socket.AF_INET6, "::1")
    one = unix_pair(os.path.join(d, "one.sock"))
    dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dg.bind(os.path.join(d, "dg1.sock"))
    keep(dg)
    print("phase1")
    line()
    lis = tcp_pair(socket.AF_INET, "127.0.0.1")
    tcp_pair(socket.AF_INET6, "::1")
    unix_pair(os.path.join(d, "two.sock"))
    late_tcp = socket.socket()
    late_tcp.bind(("127.0.0.1", 0))  # bound only, for now
    late_unix = socket.socket(socket.AF_UNIX)  # neither bound nor connected
    late_udp = socket.socket(type=socket.SOCK_DGRAM)
    late_udp.bind(("127.0.0.1", 0))
    late_dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    late_dg.bind(b"\0circuit-test-%d" % os.getpid())
    keep(late_tcp, late_unix, late_udp, late_dg)
    print("phase2")
    line()
    late_tcp.connect(lis.getsockname())
    acc, _ = lis.accept()
    late_unix.connect(os.path.join(d, "one.sock"))
    acc_unix, _ = one.accept()
    late_udp.connect(udp.getsockname())
    late_dg.connect(os.path.join(d, "dg1.sock"))
    keep(acc, acc_unix)
    report = {}
    for s in held:
        try:
            peer = name(s.getpeername())
        except OSError:
            peer = ""  # not connected (a listener, an unconnected datagram socket)
        report[s.fileno()] = [s.family.name, s.type.name, name(s.getsockname()), peer]
    print(json.dumps(report), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
