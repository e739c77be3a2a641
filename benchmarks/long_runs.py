"""Long runs and many runs: the batched summary's time and peak memory.

* ``--samples`` samples of 4 processes x 25 threads (default 360,000:
  36,000,000 thread-samples, an hour at 100 Hz), written by the real
  writer (benchmarks/analysis_cost.py's generator), then, each in a fresh
  process: ``circuit.load`` + ``.summary()`` (batched: analysis/query.py)
  and ``circuit report``; wall time and peak RSS (ru_maxrss of the child),
  ``--repeat`` times each (median wall, highest peak).
* ``--many`` small run folders (2 processes x 3 threads x 100 samples)
  summarised together: ``circuit.load_many(glob).summary()`` in a fresh
  process.

* the same at 1 kHz (``--huge 3600000`` samples: 360,000,000
  thread-samples, an hour at 1 kHz): the summary's time and peak RSS.
  Its run takes minutes and gigabytes to write, so it is written apart,
  outside the CPU lock (``--huge-write DIR``), then measured
  (``--huge-measure DIR``), which adds ``huge`` to the results.

Usage: python benchmarks/long_runs.py [--samples 360000] [--many 1000]
       python benchmarks/long_runs.py --huge-write DIR [--huge 3600000]
       python benchmarks/long_runs.py --huge-measure DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, log, machine, write_results
from analysis_cost import generate

SUMMARY = """
import sys, circuit
s = circuit.load(sys.argv[1]).summary()
print(s["thread_samples"], len(s["findings"]))
"""
MANY = """
import sys, circuit
t = circuit.load_many(sys.argv[1]).summary()
print(len(t))
"""
REPORT = """
import sys
from circuit.cli import main
main(["report", sys.argv[1], "-o", sys.argv[2]])
"""
# Appended to each step: the process's own peak RSS (ru_maxrss), and that
# of its children (the summary of many runs uses a process per CPU).
PEAK = """
import json, resource
print(json.dumps({"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def child(code: str, *args: str) -> dict[str, float | str]:
    """Wall time and peak RSS of one step, in a fresh process."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code + PEAK, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"step failed: {r.stderr[-2000:]}")
    lines = r.stdout.strip().splitlines()
    peak = json.loads(lines[-1])
    return {
        "wall_s": wall,
        "peak_rss_mib": peak["self"] / 1024,
        "children_peak_rss_mib": peak["children"] / 1024,
        "out": "\n".join(lines[:-1])[-300:],
    }


def repeated(n: int, code: str, *args: str) -> dict[str, Any]:
    """:func:`child` ``n`` times: the median wall time, the highest peak
    RSS, and every run's figures."""
    runs = [child(code, *args) for _ in range(n)]
    return {
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "children_peak_rss_mib": max(r["children_peak_rss_mib"] for r in runs),
        "walls_s": [r["wall_s"] for r in runs],
        "peaks_rss_mib": [r["peak_rss_mib"] for r in runs],
        "out": runs[-1]["out"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=360_000)
    ap.add_argument("--many", type=int, default=1000)
    ap.add_argument("--huge", type=int, default=3_600_000)
    ap.add_argument("--huge-write", type=Path, default=None)
    ap.add_argument("--huge-measure", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each step (median wall)")
    a = ap.parse_args()
    if a.huge_write:
        g0 = time.perf_counter()
        gen = generate(a.huge_write, 4, 25, a.huge, rate_hz=1000.0)
        log(f"{gen['thread_samples']:,} thread-samples written in {time.perf_counter() - g0:.0f} s")
        return
    if a.huge_measure:
        path = a.huge_measure
        data = json.loads((RESULTS / "long_runs.json").read_text())
        data["huge"] = {
            "thread_samples": json.loads((path / "meta.json").read_text())["thread_samples"],
            "threads_bytes": (path / "threads.parquet").stat().st_size,
            "machine": machine(),
            **child(SUMMARY, str(path)),
        }
        log(f"huge: {data['huge']}")
        write_results("long_runs", data)
        return
    m = machine()
    out: dict = {"benchmark": "long_runs", "machine": m, "args": vars(a)}
    with tempfile.TemporaryDirectory(prefix="circuit-long-") as tmp:
        base = Path(tmp)
        many = base / "many"
        g0 = time.perf_counter()
        for i in range(a.many):
            generate(many / f"run{i:04d}", 2, 3, 100, seed=i)
        log(f"{a.many} small runs written in {time.perf_counter() - g0:.0f} s")
        out["many"] = {"runs": a.many, **repeated(a.repeat, MANY, str(many / "run*"))}
        log(f"many: {out['many']}")
        path = base / "long"
        g0 = time.perf_counter()
        gen = generate(path, 4, 25, a.samples)
        out["generate_s"] = time.perf_counter() - g0
        out["thread_samples"] = gen["thread_samples"]
        out["threads_bytes"] = (path / "threads.parquet").stat().st_size
        log(f"{gen['thread_samples']:,} thread-samples written in {out['generate_s']:.0f} s")
        out["summary"] = repeated(a.repeat, SUMMARY, str(path))
        log(f"summary: {out['summary']}")
        out["report"] = repeated(a.repeat, REPORT, str(path), str(base / "r.html"))
        log(f"report: {out['report']}")
    write_results("long_runs", out)


if __name__ == "__main__":
    main()
