"""The CPU-bound job the overhead benchmark traces.

``python cpu_job.py --model processes|threads --count N --out result.json``:
two workers (processes: multiprocessing, both cores busy; threads: two
threads sharing the GIL) each count to N.  The job times itself and writes
when it started (CLOCK_MONOTONIC is system-wide, so the benchmark can compare
it with the moment it launched the tracer), its own wall and its CPU time.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

T_START = time.monotonic()  # first thing: the start-up cost ends here


def count(n: int) -> int:
    i = 0
    while i < n:
        i += 1
    return i


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("processes", "threads"), default="processes")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    t0 = time.perf_counter()
    if a.model == "processes":
        import multiprocessing as mp

        with mp.get_context("fork").Pool(a.workers) as pool:
            pool.map(count, [a.count] * a.workers)
    else:
        import threading

        ts = [threading.Thread(target=count, args=(a.count,)) for _ in range(a.workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    wall = time.perf_counter() - t0
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    with open(a.out, "w") as f:
        json.dump({"t_start": T_START, "work_wall_s": wall, "job_cpu_s": cpu}, f)


if __name__ == "__main__":
    main()
