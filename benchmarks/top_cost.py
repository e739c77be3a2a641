"""What ``circuit top``'s view costs, beside what its sampler costs.

    python benchmarks/top_cost.py [--seconds 10] [--rounds 5] [--warm 4]

A target with 100 threads (benchmarks/threads_target.py: all idle in
Event.wait, or all spinning) is watched by ``circuit top PID -o DIR`` in a
200x50 pseudo-terminal (the full-screen view, redrawn twice a second) and,
interleaved, traced by ``circuit attach PID -o DIR`` at the same rate.
After ``--warm`` seconds (imports, the first window), each circuit
process's threads are read from /proc for ``--seconds``: the view's CPU is
that of the threads named ``circuit-top`` (the view's thread names itself;
threads it starts, pyarrow's pool, inherit the name), the sampler's is the
rest of the process; the rate each held is read from its run's meta.json.
Shares are of one core, medians over the rounds.
Writes benchmarks/results/top_cost.json.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, interleave, log, machine, median, spread, tool, write_results

TARGET = ROOT / "benchmarks" / "threads_target.py"
THREADS = 100
VIEW_THREAD = "circuit-top"  # circuit/top.py THREAD_NAME


def _tasks(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (comm, ns on CPU) of every thread of ``pid``."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = Path(f"/proc/{pid}/task/{t}/comm").read_text().strip()
            ns = int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
        except (OSError, ValueError):
            continue
        out[int(t)] = (comm, ns)
    return out


def _cpu(before: dict, after: dict) -> tuple[float, float]:
    """(ns of the view's threads, ns of the others) between two readings
    (a thread that started in between counts from zero)."""
    view = rest = 0
    for tid, (comm, ns) in after.items():
        d = ns - before.get(tid, (comm, 0))[1]
        if comm == VIEW_THREAD:
            view += d
        else:
            rest += d
    return view, rest


def _drain(fd: int) -> None:
    """Read the terminal's output so that circuit never blocks writing it."""
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def _watch(argv: list[str], seconds: float, warm: float, pty_: bool) -> dict[str, float]:
    out = argv[argv.index("-o") + 1]
    res = _run(argv, seconds, warm, pty_)
    meta = json.loads((Path(out) / "meta.json").read_text())
    res["achieved_hz"] = float(meta["rate_hz_achieved"])
    res["missed_per_s"] = meta["missed_deadlines"] / max(float(meta["wall_s"]), 1e-9)
    return res


def _run(argv: list[str], seconds: float, warm: float, pty_: bool) -> dict[str, float]:
    """Run ``argv``, measure its threads from ``warm`` s on for ``seconds``,
    then stop it as a user would (q on the terminal, else SIGINT)."""
    if pty_:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        threading.Thread(target=_drain, args=(master,), daemon=True).start()
    else:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(warm)
    a = _tasks(proc.pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    b = _tasks(proc.pid)
    wall = time.monotonic() - t0
    if pty_:
        os.write(master, b"q")
    else:
        proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    if pty_:
        os.close(master)
    view, rest = _cpu(a, b)
    return {"view_share": view / 1e9 / wall, "sampler_share": rest / 1e9 / wall}


def _round(mode: str, seconds: float, warm: float, rate: float, tmp: Path) -> dict[str, Any]:
    target = subprocess.Popen(
        [sys.executable, str(TARGET), str(THREADS), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert target.stdout is not None and target.stdin is not None
    assert target.stdout.readline().strip() == "ready"
    circuit = tool("circuit")
    n = [0]

    def out() -> str:
        n[0] += 1
        return str(tmp / f"{mode}-{n[0]}")

    common = ["--rate", f"{rate:g}"]
    try:
        runs = interleave(
            {
                "attach": lambda: _watch(
                    [circuit, "attach", str(target.pid), "-o", out(), "-q", *common],
                    seconds,
                    warm,
                    pty_=False,
                ),
                "top": lambda: _watch(
                    [circuit, "top", str(target.pid), "-o", out(), *common],
                    seconds,
                    warm,
                    pty_=True,
                ),
            },
            ROUNDS,
            log=lambda m: log(f"{mode}: {m}"),
        )
    finally:
        target.stdin.close()
        target.wait(timeout=60)
    view = [r["view_share"] for r in runs["top"]]
    return {
        "mode": mode,
        "threads": THREADS,
        "rate_hz": rate,
        "view_share_median": median(view),
        "view_share_spread": spread(view),
        "top_sampler_share_median": median([r["sampler_share"] for r in runs["top"]]),
        "attach_sampler_share_median": median([r["sampler_share"] for r in runs["attach"]]),
        "top_hz_median": median([r["achieved_hz"] for r in runs["top"]]),
        "attach_hz_median": median([r["achieved_hz"] for r in runs["attach"]]),
        "rounds": runs,
    }


ROUNDS = 3


def main() -> int:
    global ROUNDS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warm", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--modes", default="idle,busy")
    args = ap.parse_args()
    ROUNDS = args.rounds
    m = machine()
    with tempfile.TemporaryDirectory(prefix="top-cost-") as tmp:
        results = [
            _round(mode, args.seconds, args.warm, args.rate, Path(tmp))
            for mode in args.modes.split(",")
        ]
    write_results(
        "top_cost",
        {
            "benchmark": "top_cost",
            "machine": m,
            "seconds": args.seconds,
            "warm_s": args.warm,
            "refreshes_per_s": 2,
            "target_share": 0.02,
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
