"""Which engine for the summary of a long run: DuckDB SQL or NumPy over batches.

On one synthetic run (benchmarks/analysis_cost.py's generator, the real
writer), each side in a fresh process, interleaved rounds, medians:

* *duckdb*: the core of the summary in SQL over threads.parquet: each
  sample's duration (window ``lead`` per thread) and the seconds per
  (thread, wait reason).  Not the whole summary: no run-queue split (it
  places a thread's queued time sequentially, spilling back over earlier
  intervals), no GIL classification, no findings.
* *batched*: ``circuit.load(run).summary()``, the whole summary read in
  batches of whole threads (analysis/query.py), findings included.
* *in memory*: ``summary.summarize``, every table as DataFrames (the
  reference), only when the run is small enough for it (``--in-memory``).

Reported: wall time, peak RSS (ru_maxrss of the child), and the import
time and installed size of duckdb.

Needs duckdb, which circuit does not depend on: ``pip install duckdb``.

Usage: python benchmarks/query_engines.py [--samples 40000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleave, log, machine, write_results
from analysis_cost import generate

SIDES = {
    "duckdb": """
import sys, time, duckdb
t0 = time.perf_counter()
con = duckdb.connect()
rows = con.sql(f'''
    WITH s AS (
        SELECT pid, tid, wait,
               coalesce(lead(t_ns) OVER (PARTITION BY pid, tid ORDER BY t_ns) - t_ns, 10000000) AS dt
        FROM read_parquet('{sys.argv[1]}/threads.parquet'))
    SELECT pid, tid, wait, sum(dt) / 1e9 AS s FROM s GROUP BY ALL''').fetchall()
print(len(rows))
""",
    "batched": """
import sys, circuit
s = circuit.load(sys.argv[1]).summary()
print(len(s["threads"]))
""",
    "in memory": """
import sys, circuit
from circuit.analysis.summary import summarize
s = summarize(circuit.load(sys.argv[1]))
print(len(s["threads"]))
""",
}


def run_side(code: str, path: Path) -> dict[str, float]:
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child
    # would report its parent's peak (this script's, writing the run) if higher.
    script = code + (
        "\nimport json, re\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "print(json.dumps({'rss': int(hwm)}))\n"
    )
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    rss = json.loads(r.stdout.strip().splitlines()[-1])["rss"] / 1024
    return {"wall_s": wall, "peak_rss_mib": rss}


def duckdb_facts() -> dict[str, float]:
    import importlib.util

    t = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; t=time.perf_counter(); import duckdb; print(time.perf_counter()-t)",
        ],
        capture_output=True,
        text=True,
    )
    spec = importlib.util.find_spec("duckdb")
    site = Path(spec.origin).parent.parent if spec and spec.origin else None
    size = sum(
        f.stat().st_size
        for p in (site.glob("*duckdb*") if site else [])
        for f in ([p] if p.is_file() else p.rglob("*"))
        if f.is_file()
    )
    return {"import_s": float(t.stdout.strip() or "nan"), "installed_mib": size / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--in-memory", action="store_true")
    a = ap.parse_args()
    out = {"benchmark": "query_engines", "machine": machine(), "args": vars(a)}
    with tempfile.TemporaryDirectory(prefix="circuit-engines-") as tmp:
        path = Path(tmp) / "run"
        out["thread_samples"] = generate(path, 4, 25, a.samples)["thread_samples"]
        sides = {k: v for k, v in SIDES.items() if k != "in memory" or a.in_memory}
        out["runs"] = interleave(
            {k: (lambda c=c: run_side(c, path)) for k, c in sides.items()}, a.rounds, log
        )
    out["duckdb"] = duckdb_facts()
    write_results("query_engines", out)


if __name__ == "__main__":
    main()
