"""What it costs to find what a socket is: through a copy of its fd, or by a dump.

A target process holds ``--conns`` TCP connections on loopback (both ends,
so 2x that many sockets, and a listener; keep it within
``sockdiag.COPY_MOST``, beyond which a lookup uses a dump).  Interleaved round by round,
circuit's socket lookup (tracer/sockdiag.py ``SocketLookup``) resolves
all of them ``--reps`` times:

* ``copy``: through a copy of each fd (tracer/sockpeek.py, pidfd_getfd),
  one call into tracer/_sockpeek.c per socket;
* ``copy-ctypes``: the same through ctypes (where the C lookup is not built);
* ``dump``: the same lookup with the copy off (one TCP sock_diag dump per
  lookup, matched by inode).

Then the window: how long circuit holds each copy, from the moment
pidfd_getfd returns it to the moment close() has released it, as the
kernel sees it: ``perf record`` of the sys_exit_pidfd_getfd and
sys_exit_close tracepoints around a run of copy lookups (a measure circuit
does not make itself; the tracepoints add ~1 us each).  Wall times of the
lookups are the loop's own ``perf_counter``.

Usage: python benchmarks/socket_copy.py [--rounds 7] [--conns 40] [--reps 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleave, log, machine, machine_line, median, write_results

from circuit.tracer.sockdiag import SocketLookup

HOLD = """
import socket, sys
n = int(sys.argv[1])
lis = socket.socket(); lis.bind(("127.0.0.1", 0)); lis.listen(n)
held = [lis]
for _ in range(n):
    c = socket.create_connection(lis.getsockname()); a, _ = lis.accept(); held += [c, a]
print(" ".join(str(s.fileno()) for s in held), flush=True)
sys.stdin.read()
"""


def socket_fds(pid: int, fds: list[int]) -> dict[int, int]:
    return {fd: os.stat(f"/proc/{pid}/fd/{fd}").st_ino for fd in fds}


def lookups(
    pid: int, fds: dict[int, int], copy: bool, reps: int, c: bool = True
) -> dict[str, float]:
    look = SocketLookup(copy=copy)
    if not c and look.peek is not None:
        look.peek.peek = None  # the ctypes path
    try:
        got = look.resolve(pid, fds)
        if len(got) != len(fds):
            raise SystemExit(f"copy={copy}: {len(got)} of {len(fds)} sockets found")
        t0 = time.perf_counter()
        for _ in range(reps):
            look.resolve(pid, fds)
        per_lookup = (time.perf_counter() - t0) / reps
    finally:
        look.close()
    return {"us_per_lookup": per_lookup * 1e6, "us_per_socket": per_lookup * 1e6 / len(fds)}


def windows(pid: int, fds: dict[int, int], reps: int) -> list[float]:
    """µs from each pidfd_getfd's return to its copy's close() returning."""
    perf = shutil.which("perf")
    if perf is None:
        return []
    with tempfile.TemporaryDirectory(prefix="circuit-sockcopy-") as tmp:
        data = f"{tmp}/perf.data"
        child = [sys.executable, __file__, "--child", str(pid), str(reps)]
        child += [f"{fd}:{ino}" for fd, ino in fds.items()]
        events = ["-e", "syscalls:sys_exit_pidfd_getfd", "-e", "syscalls:sys_exit_close"]
        subprocess.run(
            [perf, "record", "-q", "-o", data, *events, "--", *child],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        out = subprocess.run(
            [perf, "script", "-i", data, "--ns", "-F", "tid,time,event,trace"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    held: list[float] = []
    copied: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        tid, t = parts[0], float(parts[1].rstrip(":"))
        if "sys_exit_pidfd_getfd" in line:
            copied[tid] = t
        elif "sys_exit_close" in line and tid in copied:
            # ask_copy closes nothing else between the copy and its close.
            held.append((t - copied.pop(tid)) * 1e6)
    return held


def child(argv: list[str]) -> None:
    pid, reps = int(argv[0]), int(argv[1])
    fds = {int(a): int(b) for a, b in (x.split(":") for x in argv[2:])}
    look = SocketLookup(copy=True)
    for _ in range(reps):
        look.resolve(pid, fds)
    look.close()


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--conns", type=int, default=40)
    ap.add_argument("--reps", type=int, default=100)
    a = ap.parse_args()
    m = machine()
    log(machine_line(m))
    target = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(a.conns)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert target.stdout is not None and target.stdin is not None
        fds = socket_fds(target.pid, [int(x) for x in target.stdout.readline().split()])
        sides = {
            "copy": lambda: lookups(target.pid, fds, True, a.reps),
            "copy-ctypes": lambda: lookups(target.pid, fds, True, a.reps, c=False),
            "dump": lambda: lookups(target.pid, fds, False, a.reps),
        }
        runs = interleave(sides, a.rounds, log=log)
        held = windows(target.pid, fds, a.reps * 10)
        ehash = _ehash()
    finally:
        assert target.stdin is not None
        target.stdin.close()
        target.wait(timeout=10)
    held.sort()
    summary = {
        name: {k: median([r[k] for r in rs]) for k in ("us_per_lookup", "us_per_socket")}
        for name, rs in runs.items()
    }
    window = (
        {
            "copies": len(held),
            "median_us": median(held),
            "p99_us": held[int(0.99 * (len(held) - 1))],
            "max_us": held[-1],
        }
        if held
        else {}
    )
    data = {
        "benchmark": "socket_copy",
        "machine": m,
        "loadavg_1m_at_end": os.getloadavg()[0],
        "rounds": a.rounds,
        "sockets": len(fds),
        "reps": a.reps,
        "tcp_ehash_buckets": ehash,
        "runs": runs,
        "summary": summary,
        "window": window,
    }
    write_results("socket_copy", data)


def _ehash() -> int:
    """The established hash's size, as the kernel logged it at boot (0: unknown)."""
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    for line in out.splitlines():
        if "TCP established hash table entries:" in line:
            return int(line.split("entries:")[1].split()[0])
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    main()
