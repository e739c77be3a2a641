"""Sampler cost per backend: µs per thread-sample, CPU share, achieved rate.

Drives circuit.tracer.sampler.Sampler directly (the code ``circuit run`` and
``circuit attach`` run) on a live target of 1, 10, 100, 1000 threads, either
blocked in ``Event.wait`` (idle) or spinning (busy: Python threads take turns
on the GIL, so every one of them wakes up every few ms).

1. cost: ``Sampler.tick`` calls spaced as at 100 Hz (``--cost-rate``); the
   CPU time of the ticks (thread_time) per thread-sample; the flush (Arrow +
   Parquet) is timed apart and amortised per thread-sample.  Backends are
   interleaved round by round.
2. rate: ``run_loop`` at 100 Hz and 1 kHz for a few seconds (the /proc
   backend, as ``circuit run`` uses it): achieved vs requested rate, missed
   deadlines, sampler CPU share (CPU seconds per wall second).

Usage: python benchmarks/sampler_cost.py [--pairs 5] [--threads 1 10 100 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    log,
    machine,
    machine_line,
    median,
    spread,
    write_results,
)

from circuit.tracer.backends import ProcBackend, make_backend
from circuit.tracer.loop import run_loop
from circuit.tracer.sampler import Sampler
from circuit.tracer.writer import RunWriter

TARGET = str(Path(__file__).resolve().parent / "threads_target.py")


class Target:
    def __init__(self, n: int, mode: str, fds: int = 0) -> None:
        args = [sys.executable, TARGET, str(n), mode]
        if fds:
            args += ["--fds", str(fds)]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout is not None
        if self.p.stdout.readline().strip() != "ready":
            raise SystemExit("target did not start")
        self.pid = self.p.pid

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.wait(timeout=30)


def new_sampler(backend_name: str, pid: int, tmp: str, tag: str) -> Sampler:
    d = Path(tmp) / tag
    d.mkdir(parents=True, exist_ok=True)
    writer = RunWriter(d, {"format_version": 1})
    # "-py": the Python tick instead of the C one (tracer/backends/_fasttick.c).
    name, python_tick = backend_name.removesuffix("-py"), backend_name.endswith("-py")
    # proc-nots: the /proc path as a user without CAP_NET_ADMIN gets it, no taskstats.
    backend = ProcBackend(taskstats=False) if name == "proc-nots" else make_backend(name)
    if python_tick:
        os.environ["CIRCUIT_PYTHON_TICK"] = "1"
    try:
        return Sampler(backend, writer, pid, exclude={os.getpid()})
    finally:
        os.environ.pop("CIRCUIT_PYTHON_TICK", None)


def cost_once(
    backend_name: str, pid: int, nthreads: int, tmp: str, tag: str, spacing: float
) -> dict[str, float]:
    s = new_sampler(backend_name, pid, tmp, tag)
    # Warm up: opens the per-thread files, first fd scan, first full reads.
    for _ in range(3):
        s.tick(time.monotonic_ns())
        time.sleep(spacing)
    s.sink.flush()
    budget_ts = 4_000 if backend_name.startswith("psutil") else 20_000
    ticks = max(10, min(200, budget_ts // max(nthreads, 1)))
    th0 = s.thread_samples
    cpu = 0.0
    for _ in range(ticks):
        # Ticks are spaced as at the given rate, so idle threads have been
        # idle and busy ones have run in between: the real mix of reused and
        # re-read rows.  Only the tick's own CPU time counts.
        c = time.thread_time()
        s.tick(time.monotonic_ns())
        cpu += time.thread_time() - c
        time.sleep(spacing)
    c = time.thread_time()
    s.sink.flush()
    flush = time.thread_time() - c
    n = s.thread_samples - th0
    s.close()
    return {
        "ticks": float(ticks),
        "thread_samples": float(n),
        "us_per_thread_sample": cpu / n * 1e6,
        "flush_us_per_thread_sample": flush / n * 1e6,
        "ms_per_tick": cpu / ticks * 1e3,
    }


def rate_once(
    backend_name: str, pid: int, rate: float, seconds: float, tmp: str, tag: str
) -> dict[str, float]:
    s = new_sampler(backend_name, pid, tmp, tag)
    end = time.monotonic() + seconds
    w0 = time.monotonic()

    def wait(timeout: float) -> bool:
        left = end - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(timeout, left))
        return False

    st = run_loop(s, rate, wait, until_ns=round(end * 1e9))
    wall = time.monotonic() - w0
    s.close()
    return {
        "requested_hz": rate,
        "achieved_hz": st.achieved_hz,
        "achieved_share": st.achieved_hz / rate,
        "missed": float(st.missed),
        "cpu_share": st.cpu_s / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 10, 100, 1000])
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["proc", "proc-nots", "proc-nots-py", "psutil"],
        help="proc: /proc with taskstats when root; proc-nots: /proc without taskstats; "
        "NAME-py: the same with the Python tick (no C tick)",
    )
    ap.add_argument("--rate-backends", nargs="+", default=["proc", "proc-nots", "proc-nots-py"])
    ap.add_argument("--rates", type=float, nargs="+", default=[100.0, 1000.0])
    ap.add_argument("--rate-seconds", type=float, default=3.0)
    ap.add_argument("--cost-rate", type=float, default=100.0, help="tick spacing of the cost runs")
    ap.add_argument("--name", default="sampler_cost")
    a = ap.parse_args()
    m = machine()
    log(machine_line(m))
    cost: list[dict] = []
    rates: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="circuit-sampler-") as tmp:
        for mode in ("idle", "busy"):
            for n in a.threads:
                t = Target(n, mode)
                try:
                    per: dict[str, list[dict[str, float]]] = {b: [] for b in a.backends}
                    for i in range(a.pairs):
                        for b in a.backends:
                            r = cost_once(
                                b, t.pid, n + 1, tmp, f"{mode}-{n}-{b}-{i}", 1 / a.cost_rate
                            )
                            per[b].append(r)
                            log(
                                f"cost {mode} {n} threads {b} round {i + 1}: {r['us_per_thread_sample']:.2f} µs/thread-sample"
                            )
                    for b, rs in per.items():
                        us = [r["us_per_thread_sample"] for r in rs]
                        cost.append(
                            {
                                "mode": mode,
                                "threads": n,
                                "backend": b,
                                "us_per_thread_sample_median": median(us),
                                "us_per_thread_sample_spread": spread(us),
                                "flush_us_per_thread_sample_median": median(
                                    [r["flush_us_per_thread_sample"] for r in rs]
                                ),
                                "ms_per_tick_median": median([r["ms_per_tick"] for r in rs]),
                                "runs": rs,
                            }
                        )
                    fast = "proc-nots" if "proc-nots" in per else "proc"
                    if "psutil" in per and fast in per:
                        # Against the /proc path any user gets (no taskstats).
                        ratio = [
                            p["us_per_thread_sample"] / q["us_per_thread_sample"]
                            for p, q in zip(per["psutil"], per[fast], strict=True)
                        ]
                        cost[-1]["psutil_over_proc_median"] = median(ratio)
                    for rb, rate in [(rb, r) for rb in a.rate_backends for r in a.rates]:
                        rs = [
                            rate_once(
                                rb, t.pid, rate, a.rate_seconds, tmp, f"r{mode}-{n}-{rb}-{rate}-{i}"
                            )
                            for i in range(max(1, a.pairs // 2))
                        ]
                        for r in rs:
                            log(
                                f"rate {mode} {n} threads {rb} {rate:g} Hz: {r['achieved_hz']:.1f} Hz, CPU share {r['cpu_share']:.3f}"
                            )
                        rates.append(
                            {
                                "mode": mode,
                                "threads": n,
                                "backend": rb,
                                "requested_hz": rate,
                                "achieved_hz_median": median([r["achieved_hz"] for r in rs]),
                                "achieved_share_median": median([r["achieved_share"] for r in rs]),
                                "missed_median": median([r["missed"] for r in rs]),
                                "cpu_share_median": median([r["cpu_share"] for r in rs]),
                                "cpu_share_spread": spread([r["cpu_share"] for r in rs]),
                                "runs": rs,
                            }
                        )
                finally:
                    t.close()
    write_results(
        a.name,
        {
            "benchmark": "sampler_cost",
            "machine": m,
            "pairs": a.pairs,
            "args": {"cost_rate": a.cost_rate, "rate_seconds": a.rate_seconds},
            "cost": cost,
            "rates": rates,
        },
    )


if __name__ == "__main__":
    main()
