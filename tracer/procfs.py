"""Pure parsers for Linux /proc files.

Every function takes the raw bytes the kernel gave us and returns plain
values; nothing here touches the file system, so the parsers are unit-tested
on canned text, including hostile thread names.
"""

from __future__ import annotations

import re
import socket
import struct
from typing import NamedTuple

# Thread names are set by the target (prctl/pthread_setname_np) and may hold
# any byte but NUL: spaces, parentheses, newlines, invalid UTF-8.  We keep
# them, escaping what is not UTF-8, so Parquet (which wants UTF-8) accepts them.
NAME_ERRORS = "backslashreplace"


class Stat(NamedTuple):
    comm: str
    state: str
    ppid: int
    utime: int  # clock ticks
    stime: int  # clock ticks
    num_threads: int
    starttime: int  # clock ticks since boot
    rss_pages: int
    processor: int
    cutime: int = 0  # clock ticks: what the process's reaped children used
    cstime: int = 0


def parse_stat(data: bytes) -> Stat:
    """Parse /proc/PID/stat or /proc/PID/task/TID/stat.

    The comm field is in parentheses and may itself contain ``) S 1 (``, so
    it ends at the *last* closing parenthesis, not the first.
    """
    lp = data.index(b"(")
    rp = data.rindex(b")")
    comm = data[lp + 1 : rp].decode("utf-8", NAME_ERRORS)
    f = data[rp + 2 :].split()
    # f[0] is field 3 (state) in proc(5) numbering.
    return Stat(
        comm,
        f[0].decode("ascii", "replace"),
        int(f[1]),
        int(f[11]),
        int(f[12]),
        int(f[17]),
        int(f[19]),
        int(f[21]),
        int(f[36]) if len(f) > 36 else -1,
        int(f[13]),
        int(f[14]),
    )


def parse_schedstat(data: bytes) -> tuple[int, int, int]:
    """(cpu time ns, run-queue delay ns, times scheduled in)."""
    a, b, c = data.split()[:3]
    return int(a), int(b), int(c)


def parse_syscall(data: bytes) -> tuple[int, int]:
    """(syscall number, first argument) from /proc/TID/syscall.

    ``running`` -> (-1, 0); ``-1 sp pc`` (blocked outside a syscall) -> (-1, 0).
    """
    f = data.split()
    if not f or f[0] == b"running":
        return -1, 0
    nr = int(f[0])
    if nr < 0 or len(f) < 2:
        return -1, 0
    arg0 = int(f[1], 16)
    if arg0 >= 1 << 63:  # keep it in int64 for Parquet
        arg0 -= 1 << 64
    return nr, arg0


def parse_wchan(data: bytes) -> str:
    s = data.decode("ascii", "replace").strip()
    return "" if s == "0" else s


def parse_ctx_switches(status: bytes) -> tuple[int, int]:
    """(voluntary, involuntary) context switches from /proc/TID/status."""
    # Anchored on the newline: "nonvoluntary_..." contains "voluntary_...".
    i = status.find(b"\nvoluntary_ctxt_switches:")
    j = status.find(b"\nnonvoluntary_ctxt_switches:")
    if i < 0 or j < 0:
        return 0, 0
    vol = int(status[i + 25 : status.index(b"\n", i + 1)])
    end = status.find(b"\n", j + 1)
    invol = int(status[j + 28 : end if end > 0 else None])
    return vol, invol


def parse_statm_rss(data: bytes, page_size: int) -> int:
    return int(data.split()[1]) * page_size


class IOCounters(NamedTuple):
    read_chars: int
    write_chars: int
    read_bytes: int
    write_bytes: int


def parse_io(data: bytes) -> IOCounters:
    vals: dict[bytes, int] = {}
    for line in data.splitlines():
        k, _, v = line.partition(b":")
        if v:
            vals[k] = int(v)
    return IOCounters(
        vals.get(b"rchar", 0),
        vals.get(b"wchar", 0),
        vals.get(b"read_bytes", 0),
        vals.get(b"write_bytes", 0),
    )


def parse_loadavg_last_pid(data: bytes) -> int:
    """The most recently allocated pid (threads included), system-wide."""
    return int(data.split()[4])


def parse_loadavg_running(data: bytes) -> int:
    """How many tasks are runnable (on a CPU or queued for one) right now, system-wide."""
    return int(data.split()[3].split(b"/")[0])


# ---------------------------------------------------------------- fd kinds

FD_KINDS = (
    "file",
    "socket",
    "pipe",
    "epoll",
    "eventfd",
    "timerfd",
    "signalfd",
    "inotify",
    "device",
    "other",
)

_ANON = {
    "[eventpoll]": "epoll",
    "[eventfd]": "eventfd",
    "[timerfd]": "timerfd",
    "[signalfd]": "signalfd",
    "inotify": "inotify",
}


def fd_kind(target: str) -> str:
    """Classify the target of a /proc/PID/fd/N link."""
    if target.startswith("socket:"):
        return "socket"
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("anon_inode:"):
        return _ANON.get(target[11:], "other")
    if target.startswith("/dev/") and not target.startswith("/dev/shm/"):
        return "device"
    if target.startswith("/"):
        return "file"
    return "other"


def link_inode(target: str) -> int:
    """The inode in ``socket:[123]`` / ``pipe:[123]``, or -1."""
    lb = target.find("[")
    if lb < 0 or not target.endswith("]"):
        return -1
    try:
        return int(target[lb + 1 : -1])
    except ValueError:
        return -1


def _ipv4(hexaddr: str) -> str:
    ip, port = hexaddr.split(":")
    addr = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(ip, 16)))
    return f"{addr}:{int(port, 16)}"


def _ipv6(hexaddr: str) -> str:
    ip, port = hexaddr.split(":")
    raw = b"".join(struct.pack("<I", int(ip[i : i + 8], 16)) for i in range(0, 32, 8))
    return f"[{socket.inet_ntop(socket.AF_INET6, raw)}]:{int(port, 16)}"


TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


_UNCONNECTED = ("0.0.0.0:0", "[::]:0")


def parse_net_inet(data: bytes, proto: str, v6: bool) -> dict[int, tuple[str, str, str]]:
    """inode -> (proto, local, remote) from /proc/PID/net/{tcp,udp}{,6}."""
    out: dict[int, tuple[str, str, str]] = {}
    conv = _ipv6 if v6 else _ipv4
    for line in data.decode("ascii", "replace").splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            inode = int(f[9])
            local, remote = conv(f[1]), conv(f[2])
        except (ValueError, OSError):
            continue
        if remote in _UNCONNECTED:
            remote = ""  # listening, bound only, or an unconnected datagram socket
        state = TCP_STATES.get(f[3], f[3]) if proto == "tcp" else ""
        out[inode] = (f"{proto}{'6' if v6 else ''} {state}".strip(), local, remote)
    return out


_UNIX_TYPES = {"0001": "stream", "0002": "dgram", "0005": "seqpacket"}
_SO_ACCEPTCON = 1 << 16  # the Flags column of a listening socket
_SS_CONNECTED = "03"


def parse_net_unix(data: bytes) -> dict[int, tuple[str, str, str]]:
    """inode -> (proto, path, "") from /proc/PID/net/unix: ``unix stream
    LISTEN``, ``unix stream ESTABLISHED`` or ``CLOSE``, ``unix dgram``;
    the table names no peer, so the remote address stays empty."""
    out: dict[int, tuple[str, str, str]] = {}
    for line in data.decode("utf-8", NAME_ERRORS).splitlines()[1:]:
        f = line.split(None, 7)
        if len(f) < 7:
            continue
        try:
            inode = int(f[6])
            flags = int(f[3], 16)
        except ValueError:
            continue
        kind = _UNIX_TYPES.get(f[4], f[4])
        if kind == "dgram":
            proto = "unix dgram"
        elif flags & _SO_ACCEPTCON:
            proto = f"unix {kind} LISTEN"
        else:
            proto = f"unix {kind} {'ESTABLISHED' if f[5] == _SS_CONNECTED else 'CLOSE'}"
        out[inode] = (proto, f[7] if len(f) > 7 else "", "")
    return out


# -- /proc/PID/maps: the python image (for telling GIL waits from lock waits)

_PY_IMAGE = re.compile(r"(?:^|/)(?:lib)?python[0-9.]*[a-z]?(?:\.so[0-9.]*)?(?:\s|$)")


# Lines that may name a python image: "python", a version, maybe ".so...",
# then the end of the line or a space and no more "/".  Every image line is
# one (the exact test, is_python_image, runs on these only); extension
# modules (".cpython-311-...so") and site-packages paths are not.  It starts
# with a literal, so the regex engine skips ahead to each "python".
_PY_BASENAME = re.compile(rb"python[0-9.]*[a-z]?(?:\.so[0-9.]*)?(?:[ \t\r\f\v][^/\n]*)?$", re.M)


def is_python_image(path: str) -> bool:
    """``/usr/bin/python3.11``, ``.../libpython3.11.so.1.0``, ``python3.13t``: True."""
    return bool(_PY_IMAGE.search(path.rsplit("/", 1)[-1] + " "))


def parse_python_maps(data: bytes) -> list[tuple[int, int, str, str]]:
    """The mappings of the python executable / libpython in /proc/PID/maps.

    Returns (start, end, path, perms) rows.  The anonymous read-write mapping
    that directly follows an image's last mapping is its .bss (static builds
    keep ``_PyRuntime`` there); it is returned with the path ``<image> [bss]``.
    Only the lines whose file name holds "python", and the line after each,
    are decoded: a big application maps hundreds of files, and this is read
    while it runs.
    """
    out: list[tuple[int, int, str, str]] = []
    last_image = ""
    last_end = -1
    prev_end = -2  # where the last line looked at ended
    n = len(data)
    candidates = _PY_BASENAME.finditer(data)
    cand = next(candidates, None)
    while True:
        if last_image:
            start = prev_end + 1  # the line right after an image line: its .bss?
            if start >= n:
                break
        else:
            while cand is not None and cand.start() <= prev_end:
                cand = next(candidates, None)
            if cand is None:
                break
            start = data.rfind(b"\n", 0, cand.start()) + 1
        end = data.find(b"\n", start)
        if end < 0:
            end = n
        prev_end = end
        parts = data[start:end].decode("utf-8", NAME_ERRORS).split(None, 5)
        if len(parts) < 5:
            continue  # (not a mapping: the chain goes on)
        lo, _, hi = parts[0].partition("-")
        try:
            first, last = int(lo, 16), int(hi, 16)
        except ValueError:
            continue
        perms = parts[1]
        path = parts[5].strip() if len(parts) == 6 else ""
        if path and is_python_image(path):
            out.append((first, last, path, perms))
            last_image, last_end = path, last
            continue
        if not path and last_image and first == last_end and perms.startswith("rw"):
            out.append((first, last, f"{last_image} [bss]", perms))
        last_image, last_end = "", -1
    return out
