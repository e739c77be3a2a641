"""The sampler's CPU, two source trees side by side, interleaved pair by pair.

Each tree needs its own venv with circuit installed (``python3 -m venv
.venv && .venv/bin/pip install -e .``, which builds its C tick).  A pair
measures each tree once, the order alternating pair by pair so that drift
on a shared machine hits both alike; printed are each pair, the medians,
and the median of the per-pair ratios (B / A).  Two measures:

* default: ``circuit run`` of one job by each tree (each with its own
  python), and ``sampler_cpu_s`` from the run's meta.json: circuit's own
  CPU while it sampled.  The job: ``cpu-count --model processes --tasks 2
  --scale 0.3`` (a parent and two CPU-bound workers), or the python
  arguments after ``--``.  At 100 Hz (``--rate``), without py-spy (its
  dumps are circuit's CPU too, and noisier than the sampler).
* ``--ticks N:MODE``: CPU per ``Sampler.tick`` (thread time, flush
  excluded), ticks 10 ms apart, of one benchmarks/threads_target.py of N
  threads, ``idle`` or ``busy``, that both trees sample in turn.

``--python-tick`` puts both on the Python tick (CIRCUIT_PYTHON_TICK=1).

    git worktree add --detach ../base main       # the tree to compare with
    (cd ../base && python3 -m venv .venv && .venv/bin/pip install -q -e .)
    .venv/bin/python benchmarks/ab_sampler.py --a ../base --b . --pairs 11
    .venv/bin/python benchmarks/ab_sampler.py --a ../base --b . --ticks 100:busy
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

JOB = ["-m", "circuit.workloads", "cpu-count", "--model", "processes", "--tasks", "2"]
JOB += ["--scale", "0.3"]
META_KEYS = ("sampler_cpu_s", "sampler_cpu_share", "samples", "thread_samples", "tick")
TARGET = Path(__file__).resolve().parent / "threads_target.py"

# Run by each tree's python: only what both trees' Samplers take.
TICKS = """
import os, sys, tempfile, time
from circuit.tracer.backends import ProcBackend
from circuit.tracer.sampler import Sampler
from circuit.tracer.writer import RunWriter
pid, n = int(sys.argv[1]), int(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    w = RunWriter(tmp, {"format_version": 1})
    s = Sampler(ProcBackend(taskstats=False), w, pid, exclude={os.getpid()})
    for _ in range(3):  # opens the files, first fd scan, first full reads
        s.tick(time.monotonic_ns())
        time.sleep(0.01)
    w.flush()
    cpu = 0
    for _ in range(n):
        c = time.thread_time_ns()
        s.tick(time.monotonic_ns())
        cpu += time.thread_time_ns() - c
        time.sleep(0.01)
    s.close()
    print(cpu / n / 1e9, s.tick_impl)
"""


def python_of(tree: Path) -> str:
    return str(tree / ".venv" / "bin" / "python")


def run_job(tree: Path, out: Path, a: argparse.Namespace, env: dict) -> dict[str, Any]:
    """One ``circuit run`` of the job by ``tree``; the meta.json figures."""
    py = python_of(tree)
    cmd = [py, "-m", "circuit", "run", "-q", "--force", "-o", str(out), "--rate", str(a.rate)]
    cmd += [*a.circuit_args.split(), "--", py, *(a.job or JOB)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    meta = json.loads((out / "meta.json").read_text())
    return {k: meta.get(k) for k in META_KEYS}


def run_ticks(tree: Path, pid: int, a: argparse.Namespace, env: dict) -> dict[str, Any]:
    """CPU per tick of ``tree``'s sampler on the target ``pid``."""
    cmd = [python_of(tree), "-c", TICKS, str(pid), str(a.tick_count)]
    cpu, impl = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env=env
    ).stdout.split()
    return {"sampler_cpu_s": float(cpu), "tick": impl}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--a", type=Path, required=True, help="the tree to compare with (has .venv/)")
    ap.add_argument("--b", type=Path, default=Path("."), help="the tree under test (has .venv/)")
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--circuit-args", default="--no-pyspy", help="more circuit run options")
    ap.add_argument("--ticks", metavar="N:MODE", help="CPU per tick of an N-thread target")
    ap.add_argument("--tick-count", type=int, default=200, help="ticks per --ticks measure")
    ap.add_argument("--python-tick", action="store_true", help="both on the Python tick")
    ap.add_argument("--json", type=Path, help="also write the runs and medians here")
    ap.add_argument("job", nargs="*", help="python arguments of the job (after --)")
    a = ap.parse_args(argv)
    trees = {"A": a.a.resolve(), "B": a.b.resolve()}
    for tree in trees.values():
        if not Path(python_of(tree)).exists():
            ap.error(f"{tree} has no .venv/bin/python")
    env = dict(os.environ)
    env.pop("CIRCUIT_PYTHON_TICK", None)
    if a.python_tick:
        env["CIRCUIT_PYTHON_TICK"] = "1"
    target = None
    if a.ticks:
        n, mode = a.ticks.split(":")
        cmd = [python_of(trees["B"]), str(TARGET), n, mode]
        target = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert target.stdout is not None
        if target.stdout.readline().strip() != "ready":
            raise SystemExit("the target did not start")
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(a.pairs):
                order = ("A", "B") if i % 2 == 0 else ("B", "A")
                for side in order:
                    if target is not None:
                        got = run_ticks(trees[side], target.pid, a, env)
                    else:
                        got = run_job(trees[side], Path(tmp) / side, a, env)
                    runs[side].append(got)
                ra, rb = runs["A"][-1], runs["B"][-1]
                ca, cb = ra["sampler_cpu_s"], rb["sampler_cpu_s"]
                print(
                    f"pair {i + 1}/{a.pairs} ({'-'.join(order)}): A {ca:.6f} s, B {cb:.6f} s, "
                    f"B/A {cb / ca:.3f}  (ticks {ra['tick']}, {rb['tick']})",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if target is not None:
            assert target.stdin is not None
            target.stdin.close()
            target.wait(timeout=30)
    cpu = {s: [r["sampler_cpu_s"] for r in rs] for s, rs in runs.items()}
    ratios = [b / a for a, b in zip(cpu["A"], cpu["B"], strict=True)]
    what = (
        f"CPU per tick, {a.ticks} threads"
        if a.ticks
        else f"sampler CPU of the job at {a.rate:g} Hz"
    )
    summary = {
        "A": str(trees["A"]),
        "B": str(trees["B"]),
        "measure": what,
        "python_tick": a.python_tick,
        "job": None if a.ticks else (a.job or JOB),
        "median_cpu_s": {s: statistics.median(v) for s, v in cpu.items()},
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
    }
    med = summary["median_cpu_s"]
    lo, hi = summary["ratio_range"]
    print(f"A: {trees['A']}\nB: {trees['B']}")
    print(f"{what}, median of {a.pairs}: A {med['A']:.6f} s, B {med['B']:.6f} s")
    print(f"B/A per pair: median {summary['median_ratio']:.3f} (range {lo:.3f}-{hi:.3f})")
    if a.json:
        a.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
