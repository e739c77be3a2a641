"""Target slowdown: the same CPU-bound job untraced and traced, interleaved.

Sides (each round runs every side once, in this order): untraced; ``circuit
run`` at 100 Hz and 1 kHz, with its defaults (``circuit``, periodic py-spy
dumps included) and kernel sampling only (``circuit-k``, ``--no-pyspy``); ``py-spy record --subprocesses`` at the same rates,
blocking and ``--nonblocking``; ``psrecord --include-children`` at 100 Hz.
For each run we record

* ``work_wall_s``: the job's own wall time for its work (what the target
  feels: the slowdown),
* ``e2e_wall_s``: launch to exit of the whole command (adds the tool's
  start-up and finalising),
* ``job_cpu_s``: CPU the job used (self + workers), ``tool_cpu_s``: CPU of
  the tool (the whole tree's rusage minus the job's),
* ``startup_s``: launch to the job's first line, minus the same for the
  untraced run of the round.

Usage: python benchmarks/overhead.py [--pairs 5] [--seconds 5] [--model processes threads]
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
from _common import (
    interleave,
    log,
    machine,
    machine_line,
    median,
    ratios,
    spread,
    tool,
    write_results,
)

JOB = str(Path(__file__).resolve().parent / "cpu_job.py")
PY = sys.executable


def calibrate(seconds: float, model: str) -> int:
    """Count per worker so the untraced job takes about ``seconds``."""
    n = 5_000_000
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        subprocess.run([PY, JOB, "--model", model, "--count", str(n), "--out", out], check=True)
        wall = json.loads(Path(out).read_text())["work_wall_s"]
    return int(n * seconds / wall)


def side_commands(rate_sides: list[str], job: list[str], tmp: str) -> dict[str, list[str]]:
    circuit = tool("circuit")
    pyspy = tool("py-spy")
    cmds: dict[str, list[str]] = {"untraced": job}
    for side in rate_sides:
        name, _, rate = side.partition("@")
        hz = int(rate)
        if name in ("circuit", "circuit-k"):
            # circuit-k: kernel sampling only (--no-pyspy), circuit: its defaults
            # (periodic py-spy dumps at the auto interval included).
            nopyspy = ["--no-pyspy"] if name == "circuit-k" else []
            cmds[side] = [circuit, "run", "-q", "--force", "--rate", str(hz), *nopyspy, "-o", f"{tmp}/c", "--", *job]  # fmt: skip
        elif name in ("py-spy", "py-spy-nb"):
            nb = ["--nonblocking"] if name == "py-spy-nb" else []
            cmds[side] = [pyspy, "record", "--subprocesses", "-r", str(hz), *nb, "-f", "raw", "-o", f"{tmp}/p.txt", "--", *job]  # fmt: skip
        elif name == "psrecord":
            import shlex

            # psrecord takes the command as one string.
            cmds[side] = [tool("psrecord"), "--interval", str(1 / hz), "--include-children", "--log", f"{tmp}/ps.log", shlex.join(job)]  # fmt: skip
        else:
            raise SystemExit(f"unknown side {side}")
    return cmds


def run_one(cmd: list[str], out: str, run_dir: str | None = None) -> dict[str, float]:
    if os.path.exists(out):
        os.unlink(out)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    e2e = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} exited with {p.returncode}: {' '.join(cmd)}")
    r = json.loads(Path(out).read_text())
    tree_cpu = ru.ru_utime + ru.ru_stime
    res = {
        "work_wall_s": r["work_wall_s"],
        "e2e_wall_s": e2e,
        "job_cpu_s": r["job_cpu_s"],
        "tool_cpu_s": max(tree_cpu - r["job_cpu_s"], 0.0),
        "launch_to_start_s": r["t_start"] - t0,
    }
    if run_dir is not None:
        # circuit's own account: CPU of the sampling loop only (no start-up,
        # no finalising), per second of the target's run; and the rate it held.
        meta = json.loads(Path(run_dir, "meta.json").read_text())
        res["sampler_cpu_share"] = float(meta["sampler_cpu_share"])
        res["achieved_hz"] = float(meta["rate_hz_achieved"])
        # ... and what its py-spy dumps took (their own processes' CPU).
        res["dump_share"] = float(meta.get("pyspy", {}).get("dump_cpu_s", 0.0)) / float(
            meta["wall_s"]
        )
    return res


def bench_model(model: str, seconds: float, pairs: int, rate_sides: list[str]) -> dict:
    count = calibrate(seconds, model)
    log(f"[{model}] count per worker {count:,}")
    with tempfile.TemporaryDirectory(prefix="circuit-overhead-") as tmp:
        out = f"{tmp}/job.json"
        job = [PY, JOB, "--model", model, "--count", str(count), "--out", out]
        cmds = side_commands(rate_sides, job, tmp)
        dirs = {name: f"{tmp}/c" if name.startswith("circuit") else None for name in cmds}
        sides = {name: (lambda c=c, d=dirs[name]: run_one(c, out, d)) for name, c in cmds.items()}
        runs = interleave(sides, pairs, log=lambda m: log(f"[{model}] {m}"))
    base = runs["untraced"]
    for rs in runs.values():
        for i, r in enumerate(rs):
            r["startup_s"] = r["launch_to_start_s"] - base[i]["launch_to_start_s"]
    rw = ratios(runs, "untraced", "work_wall_s")
    re = ratios(runs, "untraced", "e2e_wall_s")
    rc = ratios(runs, "untraced", "job_cpu_s")
    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            "work_wall_s_median": median([r["work_wall_s"] for r in rs]),
            "work_wall_ratio_median": median(rw[name]),
            "work_wall_ratio_spread": spread(rw[name]),
            "e2e_wall_ratio_median": median(re[name]),
            "e2e_wall_ratio_spread": spread(re[name]),
            "job_cpu_ratio_median": median(rc[name]),
            "tool_cpu_s_median": median([r["tool_cpu_s"] for r in rs]),
            "startup_s_median": median([r["startup_s"] for r in rs]),
            "sampler_cpu_share_median": median(
                [r.get("sampler_cpu_share", float("nan")) for r in rs]
            ),
            "achieved_hz_median": median([r.get("achieved_hz", float("nan")) for r in rs]),
            "dump_share_median": median([r.get("dump_share", float("nan")) for r in rs]),
            "work_wall_ratios": rw[name],
            "e2e_wall_ratios": re[name],
        }
    return {
        "model": model,
        "count": count,
        "cores": os.cpu_count() or 1,
        "commands": cmds,
        "runs": runs,
        "summary": summary,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0, help="untraced job length")
    ap.add_argument("--model", nargs="+", default=["processes", "threads"])
    ap.add_argument(
        "--sides",
        nargs="+",
        default=[
            "circuit@100",
            "circuit-k@100",
            "circuit@1000",
            "circuit-k@1000",
            "py-spy@100",
            "py-spy-nb@100",
            "py-spy@1000",
            "py-spy-nb@1000",
            "psrecord@100",
        ],
    )
    ap.add_argument("--name", default="overhead")
    a = ap.parse_args()
    m = machine()
    log(machine_line(m))
    results = [bench_model(model, a.seconds, a.pairs, a.sides) for model in a.model]
    data = {"benchmark": "overhead", "machine": m, "pairs": a.pairs, "results": results}
    write_results(a.name, data)


if __name__ == "__main__":
    main()
