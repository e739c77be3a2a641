"""The final merge's memory and time: sorting a table at once vs in buckets.

When a run ends, the sampler merges each table's parts into one sorted
Parquet file (tracer/merge.py).  Sorting a table at once holds all of it in
memory; above ``MERGE_ROWS`` rows circuit sorts it in buckets instead, with
two reads of the parts and a spill.  For each size, the parts of a synthetic
run (the analysis benchmark's generator: 4 processes x 25 threads, a fifth of
them busy) are written once, then merged in a fresh process per round, the
two sides interleaved:

* *at once*: ``MERGE_ROWS`` raised above the table's size (the merge before
  buckets);
* *buckets*: the defaults.

Reported per side: the merge's wall and CPU time, the process's peak RSS
(ru_maxrss: the interpreter and pyarrow included, ~80 MiB), and bytes per
thread-sample of threads.parquet.

Usage: python benchmarks/merge_cost.py [--sizes 1 4 16] [--rounds 3]
(sizes in millions of thread-samples; *at once* is skipped where it would
need more than half the memory available.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine, machine_line, write_results
from analysis_cost import generate

from circuit.tracer.writer import RunWriter

MERGE = r"""
import json, resource, sys, time
from pathlib import Path
from circuit.tracer import merge
from circuit.tracer.writer import RunWriter
if sys.argv[2] == "at once":
    merge.MERGE_ROWS = 1 << 62
w = RunWriter(Path(sys.argv[1]), {"format_version": 1})  # finds the parts there
t0, c0 = time.perf_counter(), time.process_time()
w.finalize({})
t1, c1 = time.perf_counter(), time.process_time()
f = Path(sys.argv[1]) / "threads.parquet"
print(json.dumps({"wall_s": t1 - t0, "cpu_s": c1 - c0, "bytes": f.stat().st_size,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# Peak bytes per row when sorting at once (measured: ~320), to skip what would not fit.
AT_ONCE_BYTES_PER_ROW = 330


def parts_only(path: Path, samples: int) -> int:
    """Write the parts of a run of ``samples`` samples, without merging them."""
    finalize = RunWriter.finalize
    RunWriter.finalize = lambda self, updates: self.flush()  # type: ignore[method-assign]
    try:
        return generate(path, 4, 25, samples)["thread_samples"]
    finally:
        RunWriter.finalize = finalize  # type: ignore[method-assign]


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--name", default="merge_cost")
    a = ap.parse_args()
    m = machine()
    log(machine_line(m))
    results = []
    with tempfile.TemporaryDirectory(prefix="circuit-merge-") as tmp:
        for size in a.sizes:
            src = Path(tmp) / f"parts-{size}"
            g0 = time.perf_counter()
            n = parts_only(src, round(size * 1e6 / 100))
            log(f"{n:,} thread-samples of parts written in {time.perf_counter() - g0:.1f} s")
            sides = ["at once", "buckets"]
            if n * AT_ONCE_BYTES_PER_ROW > available_bytes() / 2:
                log(f"at once would need ~{n * AT_ONCE_BYTES_PER_ROW / 2**30:.1f} GiB: skipped")
                sides = ["buckets"]
            runs: dict[str, list[dict]] = {s: [] for s in sides}
            for r in range(a.rounds):
                for side in sides:
                    run = Path(tmp) / "run"
                    shutil.rmtree(run, ignore_errors=True)
                    shutil.copytree(src, run)
                    out = subprocess.run(
                        [sys.executable, "-c", MERGE, str(run), side],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    res = json.loads(out.stdout.strip().splitlines()[-1])
                    log(f"{n:,} round {r + 1}/{a.rounds} {side}: {res}")
                    runs[side].append(res)
            shutil.rmtree(src)
            results.append({"thread_samples": n, "runs": runs})
    write_results(a.name, {"benchmark": "merge_cost", "machine": m, "results": results})


if __name__ == "__main__":
    main()
