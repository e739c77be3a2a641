"""circuit's GIL figures next to the oracles' on a real workload.

    python -m benchmarks.gil_truth --mode hash --python 3.12 --rate 100 --rate 1000

(from the repository root, with the venv's python) runs ``circuit run --rate R
-- PYTHON tests/targets/gil_work.py MODE N SECONDS`` under ``perf record`` of futex
syscalls and wake-ups and two py-spy samplers (benchmarks/oracles.py), then
prints, per worker thread, what the thread measured itself, how long the
kernel saw it blocked on the GIL's futex words, how often py-spy saw it hold
the GIL, and what ``circuit summary --json`` says.  Rerun it on a new kernel
or interpreter to see whether the model still holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.oracles import (
    FutexSplit,
    HeldShare,
    PySpyShares,
    RuntimeRange,
    ThreadTruth,
    by_native_tid,
    find_python,
    futex_waits,
    perf_record_argv,
    perf_script,
    perf_unusable,
    process_runtime_range,
    split_futex_time,
    target_report,
    thread_lives,
    thread_truths,
)

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "tests" / "targets" / "gil_work.py"
CIRCUIT = [sys.executable, "-m", "circuit"]


@dataclass
class Observation:
    """A command run under the oracles.  ``futex``/``held`` are None when that
    oracle could not run, and ``futex_why``/``held_why`` say why."""

    returncode: int
    stdout: str
    stderr: str
    pid: int
    threads: dict[int, ThreadTruth]
    runtime: RuntimeRange | None
    futex: FutexSplit | None
    futex_why: str
    held: dict[int, HeldShare] | None
    held_why: str

    def life(self, tid: int) -> float:
        """A worker's life: from its creation to its exit per the kernel where
        perf ran (its first GIL wait comes before its first line), else from
        its first line to its last."""
        if self.futex is not None and tid in self.futex.lives:
            return self.futex.lives[tid]
        return self.threads[tid].lifetime_s

    def contention(self, tid: int) -> float:
        """The truth: GIL wait / life."""
        life = self.life(tid)
        return self.gil_wait(tid)[0] / life if life > 0 else 0.0

    def gil_wait(self, tid: int) -> tuple[float, str]:
        """A worker's GIL wait and its source: the kernel's futex time where
        perf ran, else the thread's own off-CPU time (all of it is GIL wait in
        threads that block on nothing else)."""
        if self.futex is not None:
            return self.futex.gil.get(tid, 0.0), "futex"
        return self.threads[tid].off_cpu_s, "off-cpu"


def _leaf_target(root: int, script: str) -> int | None:
    """``root`` or its descendant running the Python script named ``script``."""
    import psutil

    try:
        top = psutil.Process(root)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return None
    for p in procs:
        with contextlib.suppress(psutil.Error):
            args = [a for a in p.cmdline()[1:] if not a.startswith("-")]
            if args and os.path.basename(args[0]) == script:
                return p.pid
    return None


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="gil-oracles-") as d:
        yield Path(d)


def observe(
    cmd: Sequence[str],
    script: str = WORKLOAD.name,
    *,
    perf: bool = True,
    pyspy_seconds: int = 0,
    workdir: Path | None = None,
    timeout: float = 120.0,
) -> Observation:
    """Run ``cmd`` (which starts tests/targets/gil_work.py, itself or through a tracer
    such as ``circuit run``) under ``perf record`` and, once the target
    process (the one running ``script``) is up, two py-spy samplers for
    ``pyspy_seconds`` (0: none; the target must outlive them)."""
    futex_why = "not asked" if not perf else (perf_unusable() or "")
    held_why = "" if pyspy_seconds > 0 else "not asked"
    with _workdir(workdir) as wd:
        data = wd / "futex.perf"
        argv = list(cmd) if futex_why else [*perf_record_argv(data), *cmd]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
        )
        pid, rng, spies = None, None, None
        try:
            end = time.monotonic() + timeout
            while pid is None and proc.poll() is None and time.monotonic() < end:
                pid = _leaf_target(proc.pid, script)
                if pid is None:
                    time.sleep(0.005)
            if pid is not None:
                rng = process_runtime_range(pid)
                if pyspy_seconds > 0:
                    try:
                        spies = PySpyShares(pid, wd, pyspy_seconds)
                    except OSError as e:
                        held_why = str(e)
            out, err = proc.communicate(timeout=max(1.0, end - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        held = None
        if spies is not None:
            try:
                held = spies.finish()
            except RuntimeError as e:
                held_why = str(e)
        elif not held_why:
            held_why = "the target was not seen running"
        futex = None
        if not futex_why:
            if pid is None or rng is None:
                futex_why = f"no _PyRuntime found for the target (pid {pid})"
            else:
                text = perf_script(data)
                futex = split_futex_time(futex_waits(text), {pid: rng}, thread_lives(text))
    try:
        report = target_report(out)
    except ValueError as e:
        raise RuntimeError(f"{e}; exit status {proc.returncode}, stderr: {err[-1500:]}") from None
    threads = thread_truths(report)
    if held is not None:
        held = by_native_tid(held, threads, int(report["pid"]))
    return Observation(
        returncode=proc.returncode,
        stdout=out,
        stderr=err,
        pid=int(report["pid"]),
        threads=threads,
        runtime=rng,
        futex=futex,
        futex_why=futex_why,
        held=held,
        held_why=held_why,
    )


def traced(
    python: str,
    mode: str,
    rate: int,
    out: Path,
    *,
    threads: int = 4,
    seconds: float = 3.0,
    pyspy_seconds: int = 0,
    perf: bool = True,
) -> tuple[Observation, dict[str, Any]]:
    """``circuit run`` of tests/targets/gil_work.py under the oracles, and ``circuit
    summary --json`` of the run."""
    cmd = [*CIRCUIT, "run", "-q", "--force", "--rate", str(rate), "-o", str(out), "--"]
    cmd += [python, str(WORKLOAD), mode, str(threads), str(seconds)]
    obs = observe(
        cmd, perf=perf, pyspy_seconds=pyspy_seconds, workdir=out.with_name(out.name + ".oracles")
    )
    if obs.returncode != 0:
        raise RuntimeError(f"circuit run failed ({obs.returncode}): {obs.stderr[-1000:]}")
    r = subprocess.run([*CIRCUIT, "summary", "--json", str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"circuit summary failed: {r.stderr[-1000:]}")
    return obs, json.loads(r.stdout)


def gil_threads(summary: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """``summary["gil"]["threads"]`` by tid."""
    return {int(t["tid"]): t for t in summary.get("gil", {}).get("threads", [])}


def gil_process(summary: dict[str, Any], pid: int) -> dict[str, Any]:
    for p in summary.get("gil", {}).get("processes", []):
        if int(p["pid"]) == pid:
            return p
    raise KeyError(f"no gil.processes entry for pid {pid}")


def _f(x: Any, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def table(obs: Observation, summary: dict[str, Any]) -> str:
    """One line per worker: the truth beside circuit's figures."""
    cg = gil_threads(summary)
    head = (
        f"{'tid':>7} {'role':5} {'life':>6} {'cpu':>6} {'rundly':>6} {'offcpu':>6} "
        f"{'futexG':>6} {'futexO':>6} {'pyspy':>6} {'heldT':>6} | {'held':>6} {'wait':>6} "
        f"{'cont':>6} {'contT':>6}"
    )
    lines = [head]
    for tid, t in obs.threads.items():
        c = cg.get(tid, {})
        h = obs.held.get(tid) if obs.held else None
        lines.append(
            f"{tid:>7} {t.role:5} {obs.life(tid):6.3f} {t.cpu_s:6.3f} {t.run_delay_s:6.3f} "
            f"{t.off_cpu_s:6.3f} "
            f"{_f(obs.futex.gil.get(tid, 0.0) if obs.futex else None):>6} "
            f"{_f(obs.futex.other.get(tid, 0.0) if obs.futex else None):>6} "
            f"{_f(h.share if h else None):>6} {_f(h.share * obs.life(tid) if h else None):>6} | "
            f"{_f(c.get('held_s')):>6} {_f(c.get('wait_s')):>6} {_f(c.get('contention')):>6} "
            f"{obs.contention(tid):6.3f}"
        )
    gil = summary.get("gil", {})
    with contextlib.suppress(KeyError):
        p = gil_process(summary, obs.pid)
        waits = sum(obs.gil_wait(tid)[0] for tid in obs.threads)
        life = sum(obs.life(tid) for tid in obs.threads)
        lines.append(
            f"process {obs.pid}: circuit contention {_f(p.get('contention'))}, "
            f"truth (workers) {waits / life if life else 0.0:.3f}; source {gil.get('source', '-')}"
        )
    return "\n".join(lines)


LEGEND = """\
life: creation to exit (perf), else first to last line; cpu/rundly/offcpu: schedstat CPU,
  run-queue delay and blocked time from the thread's first line to its last
futexG/futexO: seconds blocked (until woken) on futex words inside _PyRuntime / elsewhere
pyspy: share of py-spy samples holding the GIL; heldT = pyspy x life
held/wait/cont: circuit summary --json gil.threads[]; contT = truth GIL wait / life"""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mode", default="hash", choices=["hash", "zlib", "json", "count", "lock"])
    ap.add_argument("--python", default=sys.executable, help="interpreter path or version (3.12)")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rate", type=int, action="append", help="circuit's rate, Hz (repeatable)")
    ap.add_argument("--pyspy-seconds", type=int, default=2, help="0: no py-spy")
    ap.add_argument("-o", "--output", type=Path, help="keep the runs here (default: a temp dir)")
    args = ap.parse_args(argv)
    python = args.python
    if os.path.sep not in python:
        found = find_python(python)
        if found is None:
            ap.error(f"no python {python} on this machine")
        python = found
    print(LEGEND)
    with _workdir(args.output) as wd:
        for rate in args.rate or [100, 1000]:
            obs, summary = traced(
                python,
                args.mode,
                rate,
                wd / f"{args.mode}-{rate}hz",
                threads=args.threads,
                seconds=args.seconds,
                pyspy_seconds=args.pyspy_seconds,
            )
            print(f"\n{args.mode} x{args.threads}, {python}, circuit at {rate} Hz")
            for what, why in (("perf", obs.futex_why), ("py-spy", obs.held_why)):
                if why:
                    print(f"  ({what}: {why})")
            print(table(obs, summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
