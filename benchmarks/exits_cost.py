"""Cost of the kernel's exit records (circuit.tracer.exits): a burst of thread exits.

Traces ``tests/targets/exits_target.py threads 2000`` (2,000 threads of
~2 ms CPU, 20 at a time) with ``circuit run`` at 100 Hz, the listener on
and off (CIRCUIT_EXITS), interleaved pair by pair.  Per side, medians over
the rounds: circuit's CPU for the whole run (meta's sampler_cpu_s), the
CPU spent draining and parsing exit records, how many records it read
(every exit on the machine) and kept (the traced tree's), how many times
the socket overflowed, and how many of the 2,000 threads the summary
lists with CPU > 0.  Also the time ExitListener.open() takes (register on
every CPU, then wait for a test thread's record).  Needs root.

Usage: sudo python benchmarks/exits_cost.py [--pairs 5] [--threads 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleave, log, machine, median, ratios, spread, tool, write_results

from circuit.tracer.exits import ExitListener

TARGET = Path(__file__).resolve().parent.parent / "tests" / "targets" / "exits_target.py"


def one(listen: bool, threads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out, res = Path(tmp) / "run", Path(tmp) / "target.json"
        env = {**os.environ, "CIRCUIT_EXITS": "1" if listen else "0"}
        subprocess.run(
            [tool("circuit"), "run", "-q", "--no-pyspy", "-o", str(out), "--",
             sys.executable, str(TARGET), "threads", str(threads), str(res)],
            check=True, env=env, timeout=300,
        )  # fmt: skip
        meta = json.loads((out / "meta.json").read_text())
        s = subprocess.run(
            [tool("circuit"), "summary", "--json", str(out)],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        summary = json.loads(s.stdout)
        target = json.loads(res.read_text())
        rows = {t["tid"]: t for t in summary["threads"] if t["pid"] == target["pid"]}
        ex = meta.get("exits") or {}
        return {
            "sampler_cpu_s": float(meta["sampler_cpu_s"]),
            "drain_cpu_ms": float(ex.get("drain_cpu_s", 0.0)) * 1e3,
            "records_read": float(ex.get("records_read", 0)),
            "records_kept": float(ex.get("records_kept", 0)),
            "overflows": float(ex.get("overflows", 0)),
            "threads_with_cpu": float(
                sum(1 for t in target["threads"] if rows.get(t["tid"], {}).get("cpu_s", 0) > 0)
            ),
        }


def open_ms(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        got = ExitListener.open()
        out.append((time.perf_counter() - t) * 1e3)
        if not isinstance(got, ExitListener):
            raise SystemExit(f"exit records: {got}")
        got.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2000)
    a = ap.parse_args()
    opened = open_ms(5)
    runs = interleave(
        {"listening": lambda: one(True, a.threads), "off": lambda: one(False, a.threads)},
        a.pairs,
        log,
    )
    cpu_ratio = ratios(runs, "off", "sampler_cpu_s")["listening"]
    sides = {}
    for name, rs in runs.items():
        sides[name] = {k: median([r[k] for r in rs]) for k in rs[0]}
        sides[name]["sampler_cpu_s_spread"] = spread([r["sampler_cpu_s"] for r in rs])
    listening = runs["listening"]
    per_record = [
        r["drain_cpu_ms"] * 1e3 / r["records_read"] for r in listening if r["records_read"]
    ]
    write_results(
        "exits_cost",
        {
            "benchmark": "exits_cost",
            "machine": machine(),
            "threads": a.threads,
            "pairs": a.pairs,
            "open_ms": round(median(opened), 2),
            "drain_us_per_record": round(median(per_record), 2),
            "cpu_ratio": round(median(cpu_ratio), 3),
            "cpu_ratio_spread": spread(cpu_ratio),
            "sides": sides,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
