"""Memory of a long attach: the sampler's RSS over an hour, and the final merge's peak.

Starts a target with ``--threads`` threads that mostly sleep and wake (each
sleeps 10..100 ms, then computes ~0.1 ms), attaches ``circuit attach PID
--duration S --rate HZ`` to it, and polls circuit's own RSS (VmRSS) and
high-water mark (VmHWM) from /proc every ``--poll`` seconds (every 0.2 s
once the sampling time is over, to follow the merge).  Reported: RSS
after the first minute, at the end of sampling, the peak while sampling
and its slope (least squares over the polls after the first minute, in
MiB per hour), then the peak over the whole life of the process (VmHWM
just before it exits, and ru_maxrss of the waited child) which, when it is
above the sampling peak, is the final merge's; and the merge's wall time
(from the end of sampling to the exit).  Every poll is also appended to
``--log`` as it happens, so an interrupted run still shows its slope.

A memory benchmark: run it under ``nice`` and outside the CPU lock; the
times it reports are not the point.

Usage: python benchmarks/attach_long.py [--seconds 3600] [--threads 100] [--rate 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine, tool, write_results

TARGET = r"""
import random, sys, threading, time
stop = threading.Event()
def worker(seed):
    r = random.Random(seed)
    while not stop.is_set():
        stop.wait(r.uniform(0.01, 0.1))
        x = 0
        for i in range(2000):
            x += i
n = int(sys.argv[1])
ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
for t in ts:
    t.start()
print("ready", flush=True)
sys.stdin.read()
stop.set()
"""


def status_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def slope_mib_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) in MiB per hour."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 3600 if sxx else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--threads", type=int, default=100)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--poll", type=float, default=5)
    ap.add_argument("--log", default="/tmp/attach_long_polls.jsonl")
    ap.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = ap.parse_args()

    facts = machine()
    workdir = Path(tempfile.mkdtemp(prefix="circuit-attach-long-"))
    out = workdir / "run"
    logf = Path(args.log).open("w")  # noqa: SIM115 (appended to as the hour goes)
    target = subprocess.Popen(
        [sys.executable, "-c", TARGET, str(args.threads)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert target.stdout is not None and target.stdout.readline().strip() == "ready"
        cmd = [tool("circuit"), "attach", str(target.pid), "--duration", str(args.seconds)]
        cmd += ["--rate", str(args.rate), "-o", str(out), "-q"]
        t0 = time.monotonic()
        circ = subprocess.Popen(cmd)
        polls: list[dict[str, float]] = []
        while circ.poll() is None:
            t = time.monotonic() - t0
            st = status_kib(circ.pid)
            if st:
                p = {"t_s": t, "rss_mib": st["VmRSS"] / 1024, "hwm_mib": st["VmHWM"] / 1024}
                polls.append(p)
                logf.write(json.dumps(p) + "\n")
                logf.flush()
            time.sleep(args.poll if t < args.seconds else 0.2)
        t_exit = time.monotonic() - t0
        maxrss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rc = circ.returncode
    finally:
        if target.stdin:
            target.stdin.close()
        target.wait(timeout=30)
        logf.close()

    sampling = [p for p in polls if p["t_s"] < args.seconds]
    steady = [p for p in sampling if p["t_s"] >= 60]
    merging = [p for p in polls if p["t_s"] >= args.seconds]
    meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
    threads_file = out / "threads.parquet"
    rows = 0
    if threads_file.exists():
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(threads_file).metadata.num_rows
    sampling_peak = max((p["hwm_mib"] for p in sampling), default=float("nan"))
    data = {
        "benchmark": "attach_long",
        "machine": facts,
        "args": vars(args),
        "returncode": rc,
        "thread_samples": rows,
        "threads_parquet_bytes": threads_file.stat().st_size if threads_file.exists() else 0,
        "achieved_hz": meta.get("rate_hz_achieved"),
        "rss_after_1min_mib": steady[0]["rss_mib"] if steady else float("nan"),
        "rss_end_sampling_mib": sampling[-1]["rss_mib"] if sampling else float("nan"),
        "sampling_peak_mib": sampling_peak,
        "slope_mib_per_hour": slope_mib_per_hour([(p["t_s"], p["rss_mib"]) for p in steady]),
        "merge_rss_peak_polled_mib": max((p["rss_mib"] for p in merging), default=float("nan")),
        "lifetime_peak_mib": max(max((p["hwm_mib"] for p in polls), default=0.0), maxrss_mib),
        "merge_wall_s": t_exit - args.seconds,
        "polls": polls,
    }
    shutil.rmtree(workdir, ignore_errors=True)
    if args.no_write:
        print(json.dumps({k: v for k, v in data.items() if k != "polls"}, indent=2))
    else:
        write_results("attach_long", data)
    log(f"attach_long: {rows:,} thread-samples, exit {rc}")


if __name__ == "__main__":
    main()
