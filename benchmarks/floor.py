"""What limits the sampler here: the cost of waking up, of cold caches, of the reads.

Measured on the processes-model CPU job of ``overhead.py`` (both cores busy),
every side interleaved round by round:

1. wake-up: a loop that only sleeps, at 100 Hz and 1 kHz, in Python and in C
   (CPU per wake-up from getrusage). No sampler can cost less per tick.
2. tick: circuit's sampling loop (``Sampler`` + ``run_loop``, as ``circuit
   run`` drives them, flush included), with its C steady-state tick and with
   the Python one (CIRCUIT_PYTHON_TICK=1), against a C loop that only makes
   the same kind of reads, at the same rates.
3. cold vs hot: the same ``Sampler.tick`` back to back, after 1 ms and after
   10 ms of sleep (CPU time of the tick itself), both ticks. After a sleep,
   caches and TLBs hold other work's data (the job's, other tenants' on a
   shared host).
4. per-file kernel cost: one ``pread`` of each per-thread /proc file, on
   threads that spin and threads that sleep, back to back and after 10 ms.

The C parts need a C compiler (``cc``); without one their rows are left out.

Usage: python benchmarks/floor.py [--pairs 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine, write_results

from circuit.tracer.backends import make_backend
from circuit.tracer.loop import run_loop
from circuit.tracer.sampler import Sampler
from circuit.tracer.writer import RunWriter

HERE = Path(__file__).resolve().parent
RATES = (100, 1000)

# Sleep to absolute deadlines (as run_loop does), pread every file named on
# the command line each tick; print the CPU per tick.
C_LOOP = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long period = atol(argv[1]);
    double seconds = atof(argv[2]);
    int nf = argc - 3, fds[4096];
    char buf[4096];
    for (int i = 0; i < nf && i < 4096; i++) fds[i] = open(argv[3 + i], O_RDONLY);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    long n = (long)(seconds * 1e9 / period);
    for (long k = 0; k < n; k++) {
        t.tv_nsec += period;
        while (t.tv_nsec >= 1000000000L) { t.tv_nsec -= 1000000000L; t.tv_sec++; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
        for (int i = 0; i < nf; i++) if (fds[i] >= 0) pread(fds[i], buf, sizeof buf, 0);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
               + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("%.9f\n", cpu / n);
    return 0;
}
"""


def build_c(tmp: Path) -> str | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, exe = tmp / "loop.c", tmp / "loop"
    src.write_text(C_LOOP)
    r = subprocess.run([cc, "-O2", "-o", str(exe), str(src)], capture_output=True, text=True)
    return str(exe) if r.returncode == 0 else None


class Job:
    """The processes-model CPU job, long enough to outlast one round."""

    def __init__(self, seconds: float) -> None:
        out = Path(tempfile.mkdtemp()) / "job.json"
        count = int(60_000_000 * seconds)  # ~30-50M a second here: it outlasts the round
        args = ["--model", "processes", "--count", str(count), "--out", str(out)]
        self.p = subprocess.Popen(
            [sys.executable, str(HERE / "cpu_job.py"), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while len(self.pids()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)

    def pids(self) -> list[int]:
        try:
            with open(f"/proc/{self.p.pid}/task/{self.p.pid}/children") as f:
                return [self.p.pid, *map(int, f.read().split())]
        except OSError:
            return [self.p.pid]

    def files(self) -> list[str]:
        """What a tick reads for this job, at most: /proc/loadavg (new
        children?), every thread's schedstat (did it run?), and for the two
        workers (they did) their thread's and their process's stat.  circuit
        reads a little less (a worker's own stat every other tick at 100 Hz)."""
        out = ["/proc/loadavg"]
        for pid in self.pids():
            for tid in os.listdir(f"/proc/{pid}/task"):
                out.append(f"/proc/{pid}/task/{tid}/schedstat")
            if pid != self.p.pid:
                out += [f"/proc/{pid}/task/{pid}/stat", f"/proc/{pid}/stat"]
        return out

    def close(self) -> None:
        for pid in self.pids()[::-1]:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        self.p.wait()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def py_sleep(period_s: float, seconds: float) -> float:
    n = int(seconds / period_s)
    c0 = _cpu()
    deadline = time.monotonic()
    for _ in range(n):
        deadline += period_s
        time.sleep(max(0.0, deadline - time.monotonic()))
    return (_cpu() - c0) / n


def c_loop(exe: str, period_s: float, seconds: float, files: list[str]) -> float:
    out = subprocess.run(
        [exe, str(round(period_s * 1e9)), str(seconds), *files],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def _python_tick(on: bool) -> None:
    """The Sampler made next takes the Python tick (True) or the C one."""
    if on:
        os.environ["CIRCUIT_PYTHON_TICK"] = "1"
    else:
        os.environ.pop("CIRCUIT_PYTHON_TICK", None)


def circuit_loop(pid: int, rate: int, seconds: float, python: bool) -> float:
    _python_tick(python)
    w = RunWriter(Path(tempfile.mkdtemp()), {"format_version": 1})
    s = Sampler(make_backend("proc"), w, pid)
    end = time.monotonic() + seconds
    st = run_loop(
        s,
        rate,
        lambda t: (time.sleep(max(t, 0.0)), time.monotonic() > end)[1],
        until_ns=round(end * 1e9),
    )
    s.close()
    shutil.rmtree(w.path, ignore_errors=True)
    return st.cpu_s / st.samples


def tick_after(pid: int, gap_s: float, n: int, python: bool) -> float:
    _python_tick(python)
    w = RunWriter(Path(tempfile.mkdtemp()), {"format_version": 1})
    s = Sampler(make_backend("proc"), w, pid)
    s.tick(time.monotonic_ns())
    total = 0
    for i in range(n):
        if gap_s:
            time.sleep(gap_s)
        c = time.thread_time_ns()
        s.tick(time.monotonic_ns())
        total += time.thread_time_ns() - c
        if i % 100 == 99:
            w.flush()  # as run_loop does, apart from the timing
    s.close()
    shutil.rmtree(w.path, ignore_errors=True)
    return total / n / 1e9


PER_FILE_TARGET = """
import sys, threading
ev = threading.Event()
def spin():
    while not ev.is_set():
        pass
ts = [threading.Thread(target=spin if sys.argv[1] == "busy" else ev.wait) for _ in range(10)]
[t.start() for t in ts]
print("ready", flush=True)
sys.stdin.read()
ev.set()
"""


def per_file(mode: str, reps: int = 30) -> dict[str, dict[str, float]]:
    p = subprocess.Popen(
        [sys.executable, "-c", PER_FILE_TARGET, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdin is not None
    p.stdout.readline()
    time.sleep(0.3)
    tids = [t for t in os.listdir(f"/proc/{p.pid}/task") if int(t) != p.pid]
    out: dict[str, dict[str, float]] = {}
    try:
        for name in ("schedstat", "stat", "syscall", "wchan", "status"):
            fds = [os.open(f"/proc/{p.pid}/task/{t}/{name}", os.O_RDONLY) for t in tids]
            out[name] = {}
            for how, gap in (("back to back", 0.0), ("after 10 ms", 0.01)):
                total = 0
                for _ in range(reps):
                    if gap:
                        time.sleep(gap)
                    c = time.thread_time_ns()
                    for fd in fds:
                        try:
                            os.pread(fd, 4096, 0)
                        except OSError:
                            pass
                    total += time.thread_time_ns() - c
                out[name][how] = total / reps / len(fds) / 1e3
            for fd in fds:
                os.close(fd)
    finally:
        p.stdin.close()
        p.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each loop")
    ap.add_argument("--name", default="floor")
    args = ap.parse_args()
    m = machine()
    tmp = Path(tempfile.mkdtemp())
    exe = build_c(tmp)
    if exe is None:
        log("no C compiler: the C rows are left out")
    rounds = args.pairs
    runs: dict[str, list[float]] = {}

    def add(key: str, v: float) -> None:
        runs.setdefault(key, []).append(v)

    for i in range(rounds):
        job = Job(seconds=args.seconds * 12 + 5)
        try:
            files = job.files()
            for rate in RATES:
                add(f"sleep|Python|{rate}", py_sleep(1 / rate, args.seconds))
                if exe:
                    add(f"sleep|C|{rate}", c_loop(exe, 1 / rate, args.seconds, []))
                for python in (True, False):
                    who = "circuit, Python tick" if python else "circuit, C tick"
                    add(f"tick|{who}|{rate}", circuit_loop(job.p.pid, rate, args.seconds, python))
                if exe:
                    add(
                        f"tick|C, the same reads ({len(files)} files)|{rate}",
                        c_loop(exe, 1 / rate, args.seconds, files),
                    )
            for gap in (0.0, 0.001, 0.01):
                for python in (True, False):
                    n = 100 if gap >= 0.01 else 300
                    add(f"cold|{gap}|{python}", tick_after(job.p.pid, gap, n, python))
        finally:
            job.close()
        log(f"round {i + 1}/{rounds} done")
    files_cost = {mode: per_file(mode) for mode in ("busy", "idle")}

    write_results(
        args.name,
        {
            "benchmark": "floor",
            "machine": m,
            "rounds": runs,
            "per_file_us": files_cost,
            "c_compiler": bool(exe),
        },
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
