"""What a py-spy dump costs the process being dumped.

A CPU-bound target does a fixed amount of Python work (THREADS threads) and
reports how long it took.  Side by side in one run, in interleaved rounds
(every round runs every variant once, in a rotated order), it runs:

* ``none``         no dumps (the baseline)
* ``nonblocking``  ``py-spy dump --nonblocking`` every INTERVAL seconds
* ``blocking``     ``py-spy dump`` (the target is stopped while it is read)
* ``native``       ``py-spy dump --native`` (blocking, and unwinds C stacks)

and prints, per variant, the median work time, its ratio to the baseline,
the median dump latency, and the target time lost per dump
((median time - median baseline) / dumps taken).

    python benchmarks/pyspy_cost.py [--rounds 5] [--interval 0.1] [--work 1.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = r"""
import sys, threading, time
n_threads, seconds_of_work = int(sys.argv[1]), float(sys.argv[2])
# calibrated loop count: about `seconds_of_work` of CPU in total
def unit():
    x = 0
    for i in range(10_000):
        x += i
    return x
t0 = time.perf_counter(); k = 0
while time.perf_counter() - t0 < 0.2:
    unit(); k += 1
per_unit = 0.2 / k
units = int(seconds_of_work / per_unit / n_threads)
print("ready", flush=True)
sys.stdin.readline()  # the driver says go
def work():
    for _ in range(units):
        unit()
ts = [threading.Thread(target=work) for _ in range(n_threads)]
t0 = time.perf_counter()
for t in ts: t.start()
for t in ts: t.join()
print(time.perf_counter() - t0, flush=True)
"""

VARIANTS = {
    "none": None,
    "nonblocking": ["--nonblocking"],
    "blocking": [],
    "native": ["--native"],
}


def pyspy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else "py-spy"


def one(variant: str, interval: float, work: float, threads: int) -> tuple[float, list[float]]:
    """(target work time, dump latencies) for one run of one variant."""
    p = subprocess.Popen(
        [sys.executable, "-c", TARGET, str(threads), str(work)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdin is not None and p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    p.stdin.write("go\n")
    p.stdin.flush()
    lat: list[float] = []
    args = VARIANTS[variant]
    if args is not None:
        nxt = time.monotonic() + interval
        while p.poll() is None:
            time.sleep(max(0.0, nxt - time.monotonic()))
            nxt += interval
            t0 = time.monotonic()
            d = subprocess.run(
                [pyspy(), "dump", "--json", *args, "--pid", str(p.pid)],
                capture_output=True,
                timeout=30,
            )
            if d.returncode == 0:
                lat.append(time.monotonic() - t0)
    out, _ = p.communicate()
    return float(out.strip().splitlines()[-1]), lat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between dumps")
    ap.add_argument("--work", type=float, default=1.5, help="seconds of CPU work per run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    names = list(VARIANTS)
    times: dict[str, list[float]] = {n: [] for n in names}
    lats: dict[str, list[float]] = {n: [] for n in names}
    dumps: dict[str, list[int]] = {n: [] for n in names}
    for r in range(a.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t, lat = one(n, a.interval, a.work, a.threads)
            times[n].append(t)
            lats[n] += lat
            dumps[n].append(len(lat))
    base = statistics.median(times["none"])
    rows = []
    for n in names:
        med = statistics.median(times[n])
        nd = statistics.median(dumps[n]) if dumps[n] else 0
        rows.append(
            {
                "variant": n,
                "median_s": round(med, 4),
                "ratio": round(med / base, 4),
                "dumps_per_run": nd,
                "dump_latency_ms": round(1e3 * statistics.median(lats[n]), 2) if lats[n] else None,
                "cost_per_dump_ms": round(1e3 * (med - base) / nd, 2) if nd else None,
                "runs": [round(x, 4) for x in times[n]],
            }
        )
    if a.json:
        print(json.dumps({"interval_s": a.interval, "threads": a.threads, "rows": rows}, indent=2))
        return 0
    print(
        f"py-spy dump cost: {a.rounds} interleaved rounds, {a.threads} CPU-bound threads, "
        f"~{a.work:g} s of work, a dump every {a.interval:g} s"
    )
    print(
        "| variant | median work s | ratio to none | dumps/run | dump latency ms | cost/dump ms |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['median_s']:.3f} | {r['ratio']:.3f} | {r['dumps_per_run']} | "
            f"{r['dump_latency_ms'] if r['dump_latency_ms'] is not None else '-'} | "
            f"{r['cost_per_dump_ms'] if r['cost_per_dump_ms'] is not None else '-'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
