"""Workers that report their own run-queue delay, the oracle for ``runnable``.

    runnable_target.py pool N SECONDS     N processes burning CPU (multiprocessing.Pool)
    runnable_target.py sleepers N SECONDS N threads sleeping 1 ms and working a little

Each worker prints one JSON line: its tid, and its own schedstat (ns on a
CPU, ns queued for one) read at its start and end, and when (the
monotonic clock, which circuit's samples use too).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time


def _schedstat() -> tuple[int, int]:
    with open("/proc/thread-self/schedstat") as f:
        run, delay, _ = f.read().split()
    return int(run), int(delay)


def _measure(work, secs: float) -> dict:
    t0 = time.monotonic_ns()
    cpu0, delay0 = _schedstat()
    work(secs)
    cpu1, delay1 = _schedstat()
    t1 = time.monotonic_ns()
    return {
        "pid": os.getpid(),
        "tid": threading.get_native_id(),
        "t0_ns": t0,
        "t1_ns": t1,
        "life_s": (t1 - t0) / 1e9,
        "cpu_s": (cpu1 - cpu0) / 1e9,
        "run_delay_s": (delay1 - delay0) / 1e9,
    }


def _burn(secs: float) -> None:
    end = time.monotonic() + secs
    x = 0
    while time.monotonic() < end:
        for i in range(10_000):
            x += i


def _nap(secs: float) -> None:
    end = time.monotonic() + secs
    while time.monotonic() < end:
        time.sleep(0.001)
        sum(range(200))


def _pool_worker(secs: float) -> dict:
    return _measure(_burn, secs)


def main() -> None:
    mode, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if mode == "pool":
        with multiprocessing.get_context("fork").Pool(n) as pool:
            results = pool.map(_pool_worker, [secs] * n, chunksize=1)
    else:
        results = []
        lock = threading.Lock()

        def run() -> None:
            r = _measure(_nap, secs)
            with lock:
                results.append(r)

        ts = [threading.Thread(target=run) for _ in range(n)]
        [t.start() for t in ts]
        [t.join() for t in ts]
    for r in results:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
