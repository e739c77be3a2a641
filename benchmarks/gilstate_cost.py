"""Cost of reading a target's GIL state from outside (circuit.tracer.gilstate).

For every CPython 3.10-3.13 found (pyenv), on a target with one spinning
thread: whether ``locate`` succeeds, how long it takes, and the median cost of
``GilReader.read()`` with the holder's thread id cached (the usual case: one
pread) and uncached (after a GIL switch: two preads, three on 3.10).

Usage: python benchmarks/gilstate_cost.py [--reads 20000]
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, write_results

from circuit.tracer.gilstate import NOT_READY, GilReader, locate

TARGET = Path(__file__).resolve().parent.parent / "tests" / "targets" / "gilstate_target.py"


def interpreters() -> list[str]:
    out = []
    for minor in (10, 11, 12, 13):
        found = sorted(
            glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}"))
        )
        out += found[:1]
    return out


def timed(f, n: int) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter_ns()
        f()
        ts.append(time.perf_counter_ns() - t)
    return median(ts) / 1000


def measure(exe: str, reads: int) -> dict:
    proc = subprocess.Popen([exe, str(TARGET), "spin", "120"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "ready":
                break
        t = time.perf_counter()
        layout = locate(proc.pid)
        while isinstance(layout, str) and layout.startswith(NOT_READY):
            time.sleep(0.01)
            t = time.perf_counter()
            layout = locate(proc.pid)
        locate_ms = (time.perf_counter() - t) * 1e3
        if isinstance(layout, str):
            return {"exe": exe, "locate": layout}
        with GilReader(proc.pid, layout) as reader:
            cached = timed(reader.read, reads)

            def uncached() -> None:
                reader.invalidate()
                reader.read()

            fresh = timed(uncached, reads)
        return {
            "exe": exe,
            "version": "{}.{}".format(*layout.version),
            "locate": "ok",
            "locate_ms": round(locate_ms, 2),
            "read_us_cached": round(cached, 2),
            "read_us_uncached": round(fresh, 2),
        }
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reads", type=int, default=20000)
    args = ap.parse_args()
    m = machine()
    rows = [measure(exe, args.reads) for exe in interpreters()]
    write_results(
        "gilstate_cost",
        {"benchmark": "gilstate_cost", "machine": m, "reads": args.reads, "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
