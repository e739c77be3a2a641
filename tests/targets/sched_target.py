"""Threads and processes that break sampling rules, one phase after another.

    python sched_target.py [SECONDS_PER_PHASE] [PHASE ...]

Phases (all by default, in this order):

* ``sleepers``: 4 threads sleep a random 0.2-3 ms and wake to do a little
  work, on an otherwise idle target: hundreds of voluntary switches each,
  blocked most of the time, in pieces far shorter than a sampling interval.
* ``io``: a ThreadPoolExecutor of 8 threads sends requests to a real TCP
  server on loopback (a thread per connection): blocked on sockets.
* ``gil``: 4 threads of pure-Python work: blocked on the GIL, one at a time
  on a CPU.
* ``short``: threads of 1-20 ms each, one after another, a few at once.
* ``pool``: ``multiprocessing.Pool(4)`` of pure-Python work on however many
  cores there are: more processes than cores (involuntary switches, run-queue
  delay).

Every thread of the target process (the main thread too) reads its own
``/proc/thread-self/status`` and ``schedstat`` as its last act (``own``), as
does each pool worker after each of its tasks (the last kept).  The JSON on stdout's last line: pid, the
phases' [start, end] in ``time.monotonic_ns()``, and those readings.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import socket
import socketserver
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

READINGS: list[dict[str, Any]] = []
_lock = threading.Lock()


def own(role: str) -> dict[str, Any]:
    """The calling thread's counters, as the kernel keeps them."""
    t_ns = time.monotonic_ns()
    with open("/proc/thread-self/schedstat") as f:
        cpu, delay, pcount = (int(x) for x in f.read().split())
    counts = {}
    with open("/proc/thread-self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                counts[key] = int(value)
    return {
        "tid": threading.get_native_id(),
        "pid": os.getpid(),
        "role": role,
        "t_ns": t_ns,  # the counts are from some moment between these two
        "after_ns": time.monotonic_ns(),
        "cpu_ns": cpu,
        "run_delay_ns": delay,
        "sched_in": pcount,
        "vol": counts["voluntary_ctxt_switches"],
        "invol": counts["nonvoluntary_ctxt_switches"],
    }


def record(role: str) -> None:
    reading = own(role)
    with _lock:
        READINGS.append(reading)


def busy(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i
    return x


def sleepers(seconds: float) -> None:
    def body(seed: int) -> None:
        rnd = random.Random(seed)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(rnd.uniform(0.0002, 0.003))
            busy(200)
        record("sleepers")

    threads = [threading.Thread(target=body, args=(i,), name=f"sleeper-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            time.sleep(0.0005)  # the server's "work": the client waits on its socket
            self.request.sendall(data[::-1])
        record("server")


def io_pool(seconds: float) -> None:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = False
    server.block_on_close = True
    serving = threading.Thread(target=server.serve_forever, args=(0.05,), name="server")
    serving.start()
    end = time.monotonic() + seconds

    def client(i: int) -> int:
        n = 0
        while time.monotonic() < end:
            with socket.create_connection(server.server_address) as s:
                for _ in range(20):
                    s.sendall(b"x" * 512)
                    got = 0
                    while got < 512:
                        got += len(s.recv(4096))
                    n += 1
        return n

    with ThreadPoolExecutor(8, thread_name_prefix="io") as pool:
        list(pool.map(client, range(8)))
        list(pool.map(lambda _: record("io"), range(8)))  # one each, usually
    server.shutdown()
    server.server_close()
    serving.join()


def gil_bound(seconds: float) -> None:
    def body() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            busy(2000)
        record("gil")

    threads = [threading.Thread(target=body, name=f"gil-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def short_threads(seconds: float) -> None:
    rnd = random.Random(7)
    end = time.monotonic() + seconds

    def body(life: float) -> None:
        stop = time.monotonic() + life
        while time.monotonic() < stop:
            busy(300)
            time.sleep(0.0005)
        record("short")

    while time.monotonic() < end:
        batch = [
            threading.Thread(target=body, args=(rnd.uniform(0.001, 0.02),), name="short")
            for _ in range(3)
        ]
        for t in batch:
            t.start()
        for t in batch:
            t.join()


def _pool_task(n: int) -> dict[str, Any]:
    busy(n)
    return own("pool")


def cpu_pool(seconds: float) -> None:
    # 80 tasks of ~1/40 of the phase each, on 4 workers: twice the phase on one core per worker.
    t0 = time.monotonic()
    busy(100_000)
    per_task = max(10_000, int(100_000 * seconds / 40 / max(time.monotonic() - t0, 1e-4)))
    with multiprocessing.get_context("fork").Pool(4) as pool:
        last: dict[int, dict[str, Any]] = {}
        for r in pool.imap_unordered(_pool_task, [per_task] * 80):
            last[r["pid"]] = r
    READINGS.extend(last.values())


PHASES = {
    "sleepers": sleepers,
    "io": io_pool,
    "gil": gil_bound,
    "short": short_threads,
    "pool": cpu_pool,
}


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    names = sys.argv[2:] or list(PHASES)
    spans = {}
    for name in names:
        t0 = time.monotonic_ns()
        PHASES[name](seconds)
        spans[name] = [t0, time.monotonic_ns()]
        time.sleep(0.05)  # a gap between phases: each one's threads are gone before the next
    record("main")
    out = {"pid": os.getpid(), "phases": spans, "threads": READINGS}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
