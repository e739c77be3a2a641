"""A GIL workload that measures itself: ``python gil_work.py MODE N SECONDS``.

N threads of a ``ThreadPoolExecutor`` repeat one library call, as a user's
program would, from the moment all N have started (a barrier: no thread
waits for the GIL behind the others' work before its first line) until a
common deadline SECONDS later:

* ``hash``: ``hashlib.sha256`` of a 32 MiB buffer (releases the GIL);
* ``zlib``: ``zlib.compress`` of 2 MiB (releases the GIL);
* ``json``: ``json.dumps`` of a ~1 MB object (holds the GIL throughout);
* ``count``: a pure-Python counting loop (holds the GIL, hands it off every
  switch interval);
* ``lock``: N-1 ``count`` threads, plus one thread blocked on a
  ``threading.Lock`` that the main thread holds until the deadline.

Each worker reads, at its first and at its last line, its native tid, the
monotonic clock, ``time.thread_time()``, ``/proc/thread-self/schedstat``
(ns on a CPU, ns waiting on a run queue, times scheduled) and the context
switch counts of ``/proc/thread-self/status``.  At exit the target prints one
JSON line on stdout: ``{"pid", "python", "mode", "threads": [{"tid", "name",
"role", "ops", "start": {...}, "end": {...}}]}``.  benchmarks/oracles.py turns
it into lifetime, CPU, run delay and off-CPU time per thread.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import sys
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MODES = ("hash", "zlib", "json", "count", "lock")


def snapshot() -> dict[str, Any]:
    """The calling thread's clocks and scheduler counters, now."""
    snap: dict[str, Any] = {"t": time.monotonic(), "thread_time": time.thread_time()}
    try:
        with open("/proc/thread-self/schedstat") as f:
            cpu, delay, slices = (int(x) for x in f.read().split()[:3])
        snap.update(cpu_ns=cpu, run_delay_ns=delay, slices=slices)
    except OSError:
        pass
    try:
        with open("/proc/thread-self/status") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                    snap[key] = int(val)
    except OSError:
        pass
    return snap


def make_call(mode: str) -> Callable[[], object]:
    """The library call a worker repeats; its input is built once, here."""
    if mode == "hash":
        buf = bytes(range(256)) * (32 * 1024 * 1024 // 256)
        return lambda: hashlib.sha256(buf).digest()
    if mode == "zlib":
        rnd = random.Random(0)
        # half random, half repetitive: zlib works for its output at level 6
        data = b"".join(rnd.randbytes(512) + bytes([rnd.randrange(256)]) * 512 for _ in range(2048))
        return lambda: zlib.compress(data, 6)
    if mode == "json":
        obj = [
            {"id": i, "name": f"item-{i}", "tags": ["a", "b", "c"], "v": i / 7} for i in range(8000)
        ]
        return lambda: json.dumps(obj)
    if mode in ("count", "lock"):

        def count() -> int:
            x = 0
            for i in range(20_000):
                x += i
            return x

        return count
    raise SystemExit(f"unknown mode {mode!r}: one of {', '.join(MODES)}")


class Start:
    """All workers start together; the deadline is set when the last arrives."""

    def __init__(self, n: int, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = 0.0
        self.ready = threading.Event()
        self.barrier = threading.Barrier(n, action=self._go)

    def _go(self) -> None:
        self.deadline = time.monotonic() + self.seconds
        self.ready.set()


def work(call: Callable[[], object], start: Start, role: str) -> dict[str, Any]:
    start.barrier.wait()
    first = snapshot()
    ops = 0
    while time.monotonic() < start.deadline:
        call()
        ops += 1
    return _record(first, snapshot(), role, ops)


def wait_on(lock: threading.Lock, start: Start) -> dict[str, Any]:
    start.barrier.wait()
    first = snapshot()
    with lock:
        pass
    return _record(first, snapshot(), "lock", 0)


def _record(start: dict[str, Any], end: dict[str, Any], role: str, ops: int) -> dict[str, Any]:
    me = threading.current_thread()
    return {
        "tid": me.native_id,
        "name": me.name,
        "role": role,
        "ops": ops,
        "start": start,
        "end": end,
    }


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    mode, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    call = make_call(mode)
    lock = threading.Lock()
    start = Start(n, seconds)
    with ThreadPoolExecutor(max_workers=n) as pool:
        if mode == "lock":
            lock.acquire()
            futures = [pool.submit(wait_on, lock, start)]
            futures += [pool.submit(work, call, start, "count") for _ in range(n - 1)]
            start.ready.wait()
            time.sleep(max(0.0, start.deadline - time.monotonic()))
            lock.release()
        else:
            futures = [pool.submit(work, call, start, mode) for _ in range(n)]
        threads = [f.result() for f in futures]
    out = {
        "pid": threading.main_thread().native_id,
        "python": platform.python_version(),
        "mode": mode,
        "threads": threads,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
