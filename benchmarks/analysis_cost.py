"""Analysis cost: load + summarise a run of 1,000,000 thread-samples.

Generates a synthetic but realistic run folder with the real RunWriter (the
sampler's own writer: flushed every 100 samples as at 100 Hz, then
finalised): 4 processes x 25 threads sampled 10,000 times.  Most threads are
idle (their row is reused, as the /proc backend does when schedstat did not
move), a fifth run and block on locks (counters move, state flips), names
repeat.  Then, each in a fresh interpreter (median of --repeats):

* ``import circuit.analysis`` (pandas, pyarrow) apart from the work,
* ``circuit.load(path)`` + ``.threads`` / ``.processes`` + ``.summary()``
  (target < 2 s),
* ``circuit report`` end to end if the command exists (target < 10 s),
* bytes per thread-sample on disk (target <= 16).

Usage: python benchmarks/analysis_cost.py [--samples 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine, machine_line, median, tool, write_results

from circuit.tracer.schema import FD_KIND_COLUMNS
from circuit.tracer.writer import RunWriter, prepare_run_dir

TIMER = r"""
import json, sys, time
t0 = time.perf_counter()
import circuit, circuit.analysis.run, circuit.analysis.summary
t1 = time.perf_counter()
run = circuit.load(sys.argv[1])
th, pr = run.threads, run.processes
t2 = time.perf_counter()
s = run.summary()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "summary_s": t3 - t2,
                  "thread_samples": len(th), "threads": len(s["threads"])}))
"""


def generate(
    path: Path, procs: int, threads: int, samples: int, seed: int = 1, rate_hz: float = 100.0
) -> dict:
    rng = random.Random(seed)
    prepare_run_dir(path, force=True)
    start = time.monotonic_ns()
    w = RunWriter(path, {"format_version": 1, "mode": "run", "start_ns": start, "finalized": False})
    period = round(1e9 / rate_hz)
    # CPU used per sample scales with the period (3..9 ms running at 100 Hz)
    burst = (3 * period // 10, 9 * period // 10)
    nkinds = len(FD_KIND_COLUMNS)
    state: dict[tuple[int, int], list] = {}
    for p in range(procs):
        pid = 1000 + p
        w.add(
            "procs",
            (
                start,
                pid,
                999 if p else 1,
                "python3",
                "/usr/bin/python3",
                f"python3 worker.py --id {p}",
                p == 0,
            ),
        )
        for k in range(threads):
            tid = pid if k == 0 else pid * 100 + k
            name = "python3" if k == 0 else f"ThreadPoolExecutor-0_{k - 1}"
            busy = k % 5 == 1
            # [row (reused while idle), busy, cpu_ns, ctx_vol, ctx_invol]
            state[(pid, tid)] = [None, busy, 0, 0, 0, name]
    t = start
    for i in range(samples):
        t += period + rng.randint(-period // 50, period // 50)  # the loop's jitter
        for p in range(procs):
            pid = 1000 + p
            rows = []
            for (ppid, tid), st in state.items():
                if ppid != pid:
                    continue
                row, busy = st[0], st[1]
                if row is None or (busy and rng.random() < 0.9):
                    running = busy and rng.random() < 0.6
                    st[2] += rng.randint(*burst) if running else 50_000
                    st[3] += 1
                    st[4] += 1 if running else 0
                    cpu = st[2]
                    if running:
                        row = (
                            pid,
                            tid,
                            st[5],
                            "R",
                            "running",
                            -1,
                            0,
                            "",
                            cpu * 7 // 10,
                            cpu * 3 // 10,
                            cpu,
                            cpu // 20,
                            st[3],
                            st[4],
                            rng.randint(0, 1),
                        )
                    else:
                        row = (
                            pid,
                            tid,
                            st[5],
                            "S",
                            "lock" if busy else "poll",
                            202 if busy else 232,
                            0,
                            "futex_wait_queue" if busy else "do_epoll_wait",
                            cpu * 7 // 10,
                            cpu * 3 // 10,
                            cpu,
                            cpu // 20,
                            st[3],
                            st[4],
                            rng.randint(0, 1),
                        )
                    st[0] = row
                rows.append(row)
            w.add_threads(t, rows)
            w.add(
                "processes",
                (
                    t,
                    pid,
                    999,
                    threads,
                    50_000_000 + i * 100,
                    i * 1_000_000,
                    i * 100_000,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    12,
                    3,
                    4,
                    2,
                    1,
                    1,
                    0,
                    0,
                    0,
                    1,
                    0,
                )[: 14 + nkinds],
            )
        if (i + 1) % 100 == 0:
            w.flush()
    wall = (t - start) / 1e9
    w.finalize(
        {
            "end_ns": t,
            "wall_s": wall,
            "samples": samples,
            "thread_samples": samples * procs * threads,
            "rate_hz_achieved": float(rate_hz),
            "rate_hz_requested": float(rate_hz),
            "exit_code": 0,
        }
    )
    return {"thread_samples": samples * procs * threads}


def report_available() -> bool:
    r = subprocess.run([tool("circuit"), "report", "--help"], capture_output=True, text=True)
    return r.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=25)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None, help="write the run here and keep it")
    ap.add_argument("--name", default="analysis_cost")
    a = ap.parse_args()
    m = machine()
    log(machine_line(m))
    with tempfile.TemporaryDirectory(prefix="circuit-analysis-") as tmp:
        path = a.keep or Path(tmp) / "run"
        g0 = time.perf_counter()
        gen = generate(path, a.procs, a.threads, a.samples)
        log(
            f"generated {gen['thread_samples']:,} thread-samples in {time.perf_counter() - g0:.1f} s"
        )
        n = gen["thread_samples"]
        tsize = (path / "threads.parquet").stat().st_size
        total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        runs = []
        for i in range(a.repeats):
            out = subprocess.run(
                [sys.executable, "-c", TIMER, str(path)], capture_output=True, text=True, check=True
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            assert r["thread_samples"] == n, r
            r["load_summary_s"] = r["load_s"] + r["summary_s"]
            log(f"repeat {i + 1}: {r}")
            runs.append(r)
        report = None
        if report_available():
            rt = []
            for i in range(a.repeats):
                t0 = time.perf_counter()
                rr = subprocess.run(
                    [tool("circuit"), "report", str(path), "-o", f"{tmp}/report-{i}.html"],
                    capture_output=True,
                    text=True,
                )
                rt.append(time.perf_counter() - t0)
                if rr.returncode != 0:
                    log(f"circuit report failed: {rr.stderr.strip()[-500:]}")
                    rt = []
                    break
            report = (
                {"wall_s": rt, "median_s": median(rt)} if rt else {"error": "circuit report failed"}
            )
        else:
            log("circuit report does not exist on this branch: skipped")
    res = {
        "benchmark": "analysis_cost",
        "machine": m,
        "args": {"procs": a.procs, "threads": a.threads, "samples": a.samples},
        "thread_samples": n,
        "threads_parquet_bytes": tsize,
        "run_folder_bytes": total,
        "bytes_per_thread_sample": tsize / n,
        "run_bytes_per_thread_sample": total / n,
        "runs": runs,
        "report": report,
        "median": {
            k: median([r[k] for r in runs])
            for k in ("import_s", "load_s", "summary_s", "load_summary_s")
        },
    }
    write_results(a.name, res)


if __name__ == "__main__":
    main()
