"""Scale of the target: 1000 threads and 10,000 open fds, sampled at 100 Hz.

Runs ``circuit run --rate 100`` on benchmarks/threads_target.py (1000 threads
blocked in Event.wait, 10,000 fds on /dev/null) for a fixed time, and reads
the achieved rate, missed deadlines and sampler CPU from the run's meta.json;
the sampler's memory is its RSS polled from /proc while the target runs, and
its peak RSS (VmHWM), reached while finalising (the compaction sorts the
whole table in memory).
The achieved rate is given for the whole run and for the window in which
the target is up (marked by the wrapper with circuit.mark once every thread
and fd exists, and before it is told to exit): creating 1000 threads and
10,000 fds in under a second, and tearing them down, are transients of
their own.
Repeated ``--repeats`` times (no comparison, so nothing to interleave).

Usage: python benchmarks/scale.py [--threads 1000] [--fds 10000] [--seconds 10] [--repeats 3]
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
from _common import log, machine, machine_line, median, spread, tool, write_results

HERE = Path(__file__).resolve().parent
# Keeps the target alive for a fixed time, then lets it exit (circuit run stops with it).
# Marks the steady window (all threads and fds in place) for the steady rate.
WRAPPER = """
import subprocess, sys, time
import circuit
p = subprocess.Popen([sys.executable, {target!r}, {n!r}, {mode!r}, "--fds", {fds!r}],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert p.stdout.readline().strip() == "ready"
circuit.mark("ready")
time.sleep({seconds!r})
circuit.mark("stop")
p.stdin.close(); p.wait()
"""


def steady(out: str, rate: float) -> tuple[float, float]:
    """Achieved Hz and missed deadlines between the marks: the target's
    threads and fds all exist (its start-up and exit left out)."""
    import circuit

    run = circuit.load(out)
    marks = run.marks.set_index("name")["t_ns"]
    t = run.processes["t_ns"].drop_duplicates().sort_values().to_numpy()
    t = t[(t >= marks["ready"]) & (t <= marks["stop"])]
    period = 1e9 / rate
    gaps = (t[1:] - t[:-1]) / period
    missed = float(sum(max(0, round(g) - 1) for g in gaps))
    return (len(t) - 1) / ((t[-1] - t[0]) / 1e9), missed


def vm_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def once(n: int, fds: int, seconds: float, rate: float, tmp: str) -> dict[str, float]:
    code = WRAPPER.format(
        target=str(HERE / "threads_target.py"), n=str(n), mode="idle", fds=str(fds), seconds=seconds
    )
    out = f"{tmp}/run"
    cmd = [
        tool("circuit"),
        "run",
        "-q",
        "--force",
        "--rate",
        str(rate),
        "-o",
        out,
        "--",
        sys.executable,
        "-c",
        code,
    ]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd)
    hwm = sampling_rss = 0
    while p.poll() is None:
        hwm = max(hwm, vm_kib(p.pid, "VmHWM"))
        if time.monotonic() - t0 < seconds:  # the target is still up: sampling, not finalising
            sampling_rss = max(sampling_rss, vm_kib(p.pid, "VmRSS"))
        time.sleep(0.1)
    if p.returncode != 0:
        raise SystemExit(f"circuit run exited {p.returncode}")
    meta = json.loads(Path(out, "meta.json").read_text())
    size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    steady_hz, steady_missed = steady(out, rate)
    return {
        "steady_hz": steady_hz,
        "steady_share": steady_hz / rate,
        "steady_missed": steady_missed,
        "requested_hz": rate,
        "achieved_hz": meta["rate_hz_achieved"],
        "achieved_share": meta["rate_hz_achieved"] / rate,
        "missed": float(meta["missed_deadlines"]),
        "sampler_cpu_share": meta["sampler_cpu_share"],
        "sampler_peak_rss_mib": hwm / 1024,
        "sampling_rss_mib": sampling_rss / 1024,
        "thread_samples": float(meta["thread_samples"]),
        "wall_s": meta["wall_s"],
        "run_bytes": float(size),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1000)
    ap.add_argument("--fds", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="scale")
    a = ap.parse_args()
    m = machine()
    log(machine_line(m))
    runs = []
    with tempfile.TemporaryDirectory(prefix="circuit-scale-") as tmp:
        for i in range(a.repeats):
            r = once(a.threads, a.fds, a.seconds, a.rate, tmp)
            log(f"run {i + 1}: {r}")
            runs.append(r)
    keys = [
        "steady_hz",
        "steady_share",
        "steady_missed",
        "achieved_hz",
        "achieved_share",
        "missed",
        "sampler_cpu_share",
        "sampler_peak_rss_mib",
        "sampling_rss_mib",
        "run_bytes",
    ]
    s = {k: median([r[k] for r in runs]) for k in keys}
    sp = {k: spread([r[k] for r in runs]) for k in keys}
    write_results(
        a.name,
        {
            "benchmark": "scale",
            "machine": m,
            "args": vars(a),
            "runs": runs,
            "median": s,
            "spread": sp,
        },
    )


if __name__ == "__main__":
    main()
