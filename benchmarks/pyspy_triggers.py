"""What circuit's automatic py-spy dumps cost on a short threaded run.

Runs tests/targets/waits_target.py (three named threads, each blocked once
for WAIT_S; ~1.4 s) under ``circuit run`` with three settings, interleaved
(each round runs each once, rotated order), and reports medians:

* ``no-pyspy``  ``--no-pyspy``: no py-spy, no watching of the thread rows
* ``off``       ``--dump-interval 0``: py-spy on demand only (no automatic dumps)
* ``auto``      the default: early, long-wait, exit and periodic dumps

per setting: dumps per run (by trigger), py-spy CPU (meta.json
``pyspy.dump_cpu_s``, getrusage of the reaped dumps), circuit's own CPU
(``sampler_cpu_s``: the watching of rows included), the first dump after
the start, the target's waits with a dump inside them (its own
time.monotonic_ns() before and after each blocking call), and the target's
wall time.

    python benchmarks/pyspy_triggers.py [--rounds 7] [--wait 0.2]

Writes benchmarks/results/pyspy_triggers.json.
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

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "tests" / "targets" / "waits_target.py"
SIDES = {"no-pyspy": ["--no-pyspy"], "off": ["--dump-interval", "0"], "auto": []}


def one(side: str, wait_s: float, tmp: Path) -> dict:
    out, log = tmp / f"r-{side}", tmp / f"w-{side}.json"
    cmd = [sys.executable, "-m", "circuit", "run", "-q", "--force", "-o", str(out), "--no-fds"]
    t0 = time.monotonic()
    subprocess.run(
        [*cmd, *SIDES[side], "--", sys.executable, str(TARGET), str(log), str(wait_s)],
        check=True,
        timeout=120,
    )
    wall = time.monotonic() - t0
    meta = json.loads((out / "meta.json").read_text())
    waits = json.loads(log.read_text())
    dumps = []
    f = out / "pyspy" / "dumps.jsonl"
    if f.exists():
        dumps = [json.loads(line) for line in f.read_text().splitlines()]
    covered = sum(
        any(
            d["t_ns"] >= w["t0"]
            and d["end_ns"] <= w["t1"]
            and any(t["tid"] == w["tid"] for t in d["threads"])
            for d in dumps
        )
        for w in waits
    )
    py = meta.get("pyspy", {})
    return {
        "wall_s": wall,
        "dumps": len(dumps),
        "triggers": py.get("dumps", {}),
        "dump_cpu_s": py.get("dump_cpu_s", 0.0),
        "sampler_cpu_s": meta["sampler_cpu_s"],
        "first_dump_ms": (min(d["t_ns"] for d in dumps) - meta["start_ns"]) / 1e6
        if dumps
        else None,
        "latency_ms": statistics.median((d["end_ns"] - d["t_ns"]) / 1e6 for d in dumps)
        if dumps
        else None,
        "waits_covered": covered,
        "waits": len(waits),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--wait", type=float, default=0.2, help="each thread's blocked wait, s")
    args = ap.parse_args()
    sides = list(SIDES)
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            order = sides[r % len(sides) :] + sides[: r % len(sides)]
            for s in order:
                runs[s].append(one(s, args.wait, Path(d)))

    def med(s: str, k: str) -> float | None:
        vals = [x[k] for x in runs[s] if x[k] is not None]
        return round(statistics.median(vals), 4) if vals else None

    result = {
        "benchmark": "pyspy_triggers",
        "rounds": args.rounds,
        "wait_s": args.wait,
        "sides": {
            s: {
                **{
                    k: med(s, k)
                    for k in (
                        "wall_s",
                        "dumps",
                        "dump_cpu_s",
                        "sampler_cpu_s",
                        "first_dump_ms",
                        "latency_ms",
                    )
                },
                "waits_covered": sum(x["waits_covered"] for x in runs[s]),
                "waits": sum(x["waits"] for x in runs[s]),
                "triggers": [x["triggers"] for x in runs[s]],
            }
            for s in sides
        },
    }
    path = ROOT / "benchmarks" / "results" / "pyspy_triggers.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    for s in sides:
        r = result["sides"][s]
        print(s, {k: v for k, v in r.items() if k != "triggers"})


if __name__ == "__main__":
    main()
