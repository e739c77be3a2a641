"""Independent GIL oracles: what the kernel, py-spy and the target itself say.

None of this uses circuit, so a wrong rule in circuit's GIL model shows up as
a disagreement with these figures (tests/integration/test_gil_truth.py, and
``python -m benchmarks.gil_truth`` to rerun the comparison on a new kernel).

* **Kernel futex time** (:func:`futex_waits`, :func:`split_futex_time`):
  ``perf record -a`` of the futex syscalls, of ``sched_wakeup`` and of thread
  creation and exit for the life of the target; each thread's blocking futex
  calls are summed per word address.  A waiter for the GIL sleeps on a word
  of the GIL's mutex or condition variables, which live inside the
  interpreter's static ``_PyRuntime`` (``_PyRuntime.ceval.gil`` up to 3.11,
  ``_PyRuntime._main_interpreter._gil`` from 3.12); a ``threading.Lock``
  waiter sleeps on a heap address.  A wait counts from the syscall's entry to
  the thread's wake-up: from there to the syscall's exit the thread is
  runnable, queued for a CPU (kept apart as ``gil_syscall``).
* **py-spy's owns_gil** (:class:`PySpyShares`): ``py-spy record --gil`` keeps
  the samples where a thread holds the GIL, ``--idle`` keeps them all; the
  two run side by side on the same PID for the same number of ticks, so a
  thread's count in the first over its count in the second is its GIL-held
  share.
* **Self-measurement** (:func:`thread_truths`): tests/targets/gil_work.py reads each
  worker's clocks and scheduler counters at its first and last line; off-CPU
  time = lifetime − CPU − run delay (blocked on the GIL, a lock, I/O...).

benchmarks/gil_truth.py runs a command under all three.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PERF_EVENTS = (
    "-e",
    "syscalls:sys_enter_futex",
    "-e",
    "syscalls:sys_exit_futex",
    "-e",
    "sched:sched_wakeup",
    "-e",
    "task:task_newtask",
    "-e",
    "sched:sched_process_exit",
)
# futex(2) commands that block (the op with FUTEX_PRIVATE_FLAG and
# FUTEX_CLOCK_REALTIME masked off): WAIT, LOCK_PI, WAIT_BITSET,
# WAIT_REQUEUE_PI, LOCK_PI2.
FUTEX_CMD_MASK = 0x7F
FUTEX_WAIT_CMDS = frozenset({0, 6, 9, 11, 13})
PYSPY_RATE = 200


def find_python(version: str) -> str | None:
    """A working interpreter of ``version`` ("3.12"): ``python3.12`` on PATH,
    else a pyenv build; None when the machine has none.  (A pyenv shim on
    PATH fails for versions not activated: each candidate is run once.)"""
    candidates = [shutil.which(f"python{version}")]
    builds = Path("~/.pyenv/versions").expanduser().glob(f"{version}.*/bin/python{version}")
    candidates += [str(p) for p in sorted(builds, reverse=True)]
    for exe in candidates:
        if exe is None:
            continue
        try:
            r = subprocess.run(
                [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and r.stdout.strip() == version:
            return exe
    return None


# ------------------------------------------------------------------ ELF


def runtime_symbol(image: str) -> tuple[int, int] | None:
    """(st_value, size) of ``_PyRuntime`` in the ELF file ``image``, if defined there."""
    nm = shutil.which("nm")
    if nm is None:
        return None
    for flags in (["-D", "-S"], ["-S"]):
        r = subprocess.run([nm, *flags, image], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[3] == "_PyRuntime" and parts[2] in "DdBb":
                return int(parts[0], 16), int(parts[1], 16)
    return None


def is_fixed_address(image: str) -> bool:
    """Whether ``image`` is ET_EXEC (linked at fixed addresses, not position-independent)."""
    with open(image, "rb") as f:
        head = f.read(18)
    order = "little" if head[5:6] == b"\x01" else "big"
    return int.from_bytes(head[16:18], order) == 2


@dataclass(frozen=True)
class RuntimeRange:
    """Where ``_PyRuntime`` lies in one process: [lo, hi) absolute addresses."""

    image: str
    lo: int
    hi: int

    def __contains__(self, addr: int) -> bool:
        return self.lo <= addr < self.hi


def runtime_range(maps_text: str) -> RuntimeRange | None:
    """``_PyRuntime``'s range from a process's ``/proc/PID/maps`` text: the
    libpython or python executable that defines it, at its load base (the
    start of its mapping at file offset 0)."""
    bases: dict[str, int] = {}
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or int(parts[2], 16) != 0:
            continue
        path = parts[5].strip()
        name = os.path.basename(path)
        if path.startswith("/") and "python" in name and path not in bases:
            bases[path] = int(parts[0].split("-")[0], 16)
    # libpython first: a shared build's executable only refers to the symbol
    for path in sorted(bases, key=lambda p: "libpython" not in p):
        sym = runtime_symbol(path)
        if sym is None:
            continue
        base = 0 if is_fixed_address(path) else bases[path]
        return RuntimeRange(path, base + sym[0], base + sym[0] + sym[1])
    return None


def process_runtime_range(pid: int, timeout: float = 5.0) -> RuntimeRange | None:
    """:func:`runtime_range` of a running process, retried until its
    interpreter is mapped (just after exec the loader may still be at work)."""
    end = time.monotonic() + timeout
    while True:
        try:
            found = runtime_range(Path(f"/proc/{pid}/maps").read_text(errors="replace"))
        except OSError:
            return None
        if found is not None or time.monotonic() > end:
            return found
        time.sleep(0.01)


# ------------------------------------------------------------------ perf futex


def perf_record_argv(out: Path) -> list[str]:
    """``perf record`` of futex syscalls and of wake-ups, system-wide for the
    life of the command that follows: a timed-out wait (the GIL's 5 ms drop
    request) is woken from a timer interrupt, in whatever task runs then."""
    return ["perf", "record", "-q", "-a", *PERF_EVENTS, "-o", str(out), "--"]


@functools.cache
def perf_unusable() -> str | None:
    """Why ``perf`` cannot record futex syscalls here, or None when it can
    (asked once per process: a system-wide ``perf record`` takes ~1 s to start)."""
    return perf_probe(perf_record_argv(Path("/dev/null")), "perf record", "tracepoints", 30)


def perf_probe(argv: list[str], what: str, events: str, timeout: float) -> str | None:
    """Why ``argv`` (a perf recording, to which ``true`` is appended) cannot
    run here, or None when it can; ``what``/``events`` name it in the reason."""
    if shutil.which("perf") is None:
        return "perf is not installed (Debian: apt-get install linux-perf; make perf)"
    try:
        r = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{what} failed: {e}"
    if r.returncode != 0:
        return f"perf cannot record {events} system-wide: {r.stderr.strip()[-300:]}"
    return None


@dataclass(frozen=True)
class FutexWait:
    """One blocking futex call of one thread, in perf's clock (seconds)."""

    pid: int
    tid: int
    uaddr: int
    op: int
    t_s: float  # entry
    blocked_s: float  # entry to the thread's wake-up (to the exit if none was seen)
    syscall_s: float  # entry to exit: also the run-queue wait after the wake-up
    ret: int


_LINE = re.compile(r"^\s*(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$")
_WOKEN = re.compile(r"\bpid=(\d+)")


def futex_waits(script_text: str) -> list[FutexWait]:
    """Blocking futex calls, paired entry to exit per thread, with the
    thread's first ``sched_wakeup`` in between, from ``perf script -F
    pid,tid,time,event,trace`` output.  A call without its entry or its exit
    (the recording started or ended inside it) is left out."""
    pending: dict[int, list[Any]] = {}  # tid -> [entry, uaddr, op, wake-up]
    out: list[FutexWait] = []
    for line in script_text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        pid, tid, t, event = int(m[1]), int(m[2]), float(m[3]), m[4]
        if event == "sched:sched_wakeup":
            w = _WOKEN.search(m[5])
            if w is not None and (p := pending.get(int(w[1]))) is not None and p[3] is None:
                p[3] = t
        elif event == "syscalls:sys_enter_futex":
            args = dict(kv.split(": ", 1) for kv in m[5].split(", ") if ": " in kv)
            op = int(args.get("op", "-1"), 0)
            if op >= 0 and op & FUTEX_CMD_MASK in FUTEX_WAIT_CMDS:
                pending[tid] = [t, int(args["uaddr"], 0), op, None]
            else:
                pending.pop(tid, None)
        elif event == "syscalls:sys_exit_futex" and (p := pending.pop(tid, None)) is not None:
            ret = int(m[5].strip() or "0", 0)
            ret = ret - (1 << 64) if ret >= 1 << 63 else ret
            woke = t if p[3] is None else p[3]
            out.append(FutexWait(pid, tid, p[1], p[2], p[0], woke - p[0], t - p[0], ret))
    return out


def thread_lives(script_text: str) -> dict[int, float]:
    """Seconds from each thread's creation (``task_newtask``) to its exit
    (``sched_process_exit``), for the threads created while recording."""
    born: dict[int, float] = {}
    out: dict[int, float] = {}
    for line in script_text.splitlines():
        m = _LINE.match(line)
        if m is None or m[4] not in ("task:task_newtask", "sched:sched_process_exit"):
            continue
        w = _WOKEN.search(m[5])
        if w is None:
            continue
        tid, t = int(w[1]), float(m[3])
        if m[4] == "task:task_newtask":
            born[tid] = t
        elif tid in born:
            out[tid] = t - born.pop(tid)
    return out


def perf_script(data: Path) -> str:
    """``perf script`` text of a recording, in the form the parsers here read."""
    r = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "pid,tid,time,event,trace", "--ns"],
        capture_output=True,
        text=True,
        errors="replace",  # any task's name, system-wide: not always UTF-8
        check=True,
    )
    return r.stdout


@dataclass
class FutexSplit:
    """Per thread, seconds blocked (until woken) on futex words inside
    ``_PyRuntime`` (``gil``) and elsewhere (``other``: locks, queues, events);
    ``gil_syscall``: the GIL waits from entry to exit, run-queue wait after
    the wake-up included; ``gil_offsets``: blocked seconds per word offset
    from ``_PyRuntime``'s start, to check which words GIL waiters use;
    ``lives``: seconds from each thread's creation to its exit."""

    gil: dict[int, float] = field(default_factory=dict)
    other: dict[int, float] = field(default_factory=dict)
    gil_syscall: dict[int, float] = field(default_factory=dict)
    gil_offsets: dict[int, float] = field(default_factory=dict)
    lives: dict[int, float] = field(default_factory=dict)


def split_futex_time(
    waits: Sequence[FutexWait],
    ranges: dict[int, RuntimeRange],
    lives: dict[int, float] | None = None,
) -> FutexSplit:
    """Sum the waits of the processes in ``ranges`` (pid -> its ``_PyRuntime``)."""
    out = FutexSplit(lives=dict(lives or {}))
    for w in waits:
        rng = ranges.get(w.pid)
        if rng is None:
            continue
        if w.uaddr in rng:
            out.gil[w.tid] = out.gil.get(w.tid, 0.0) + w.blocked_s
            out.gil_syscall[w.tid] = out.gil_syscall.get(w.tid, 0.0) + w.syscall_s
            off = w.uaddr - rng.lo
            out.gil_offsets[off] = out.gil_offsets.get(off, 0.0) + w.blocked_s
        else:
            out.other[w.tid] = out.other.get(w.tid, 0.0) + w.blocked_s
    out.gil_offsets = dict(sorted(out.gil_offsets.items()))
    return out


# ------------------------------------------------------------------ py-spy


def pyspy_binary() -> str | None:
    """py-spy from this interpreter's venv, else from PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


_THREAD = re.compile(r"^thread \((0x[0-9a-fA-F]+|\d+)\)(?:: (.*))?$")


def raw_counts(text: str) -> dict[int, tuple[str, int]]:
    """Samples per thread id in ``py-spy record -f raw --threads`` output: tid -> (name, count).

    A line is ``thread (TID): NAME;frame;frame COUNT``; ``: NAME`` is missing
    when py-spy could not read the thread's name at that sample."""
    out: dict[int, tuple[str, int]] = {}
    for line in text.splitlines():
        stack, _, count = line.strip().rpartition(" ")
        m = _THREAD.match(stack.split(";", 1)[0])
        if m is None or not count.isdigit():
            continue
        tid = int(m[1], 0)
        name, n = out.get(tid, ("", 0))
        out[tid] = (name or (m[2] or "").strip(), n + int(count))
    return out


@dataclass(frozen=True)
class HeldShare:
    """One thread in two py-spy recordings of the same number of ticks."""

    name: str
    gil_samples: int  # ticks at which it held the GIL
    all_samples: int  # ticks at which it existed

    @property
    def share(self) -> float:
        """Fraction of the thread's ticks at which it held the GIL."""
        return min(1.0, self.gil_samples / self.all_samples) if self.all_samples else 0.0


class PySpyShares:
    """Two ``py-spy record`` processes on one PID, ``--gil`` and ``--idle``,
    for ``seconds`` each.

    py-spy draws its sampling times at random (exponential gaps), so two
    recordings that end with the target hold different numbers of ticks
    (±5% over 2 s at 200 Hz), which would bias the shares.  With a duration,
    py-spy stops after exactly ``seconds`` × ``rate`` ticks: the target must
    outlive it (:meth:`finish` checks)."""

    def __init__(self, pid: int, workdir: Path, seconds: int, rate: int = PYSPY_RATE) -> None:
        binary = pyspy_binary()
        if binary is None:
            raise FileNotFoundError("py-spy is not installed")
        self.ticks = seconds * rate
        self.files = {k: workdir / f"pyspy-{k}.txt" for k in ("gil", "idle")}
        base = [binary, "record", "--nonblocking", "-r", str(rate), "-d", str(seconds)]
        base += ["-f", "raw", "--threads", "--idle", "-p", str(pid)]
        extra = {"gil": ["--gil"], "idle": []}
        self.running = {
            k: subprocess.Popen(
                [*base, *extra[k], "-o", str(self.files[k])],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in self.files
        }

    def finish(self, timeout: float = 60.0) -> dict[int, HeldShare]:
        """Per tid; raises RuntimeError if a recording failed or ended early."""
        errors = []
        for k, p in self.running.items():
            try:
                _, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            if not self.files[k].exists():
                errors.append(f"py-spy --{k}: {err.strip()[-300:]}")
        if errors:
            raise RuntimeError("; ".join(errors))
        gil = raw_counts(self.files["gil"].read_text(errors="replace"))
        idle = raw_counts(self.files["idle"].read_text(errors="replace"))
        seen = max((n for _, n in idle.values()), default=0)
        if seen < 0.98 * self.ticks:
            raise RuntimeError(
                f"py-spy saw {seen} of {self.ticks} ticks: the target exited before "
                "the recordings ended (give it a longer run)"
            )
        return {
            tid: HeldShare(name, gil.get(tid, ("", 0))[1], n) for tid, (name, n) in idle.items()
        }


def by_native_tid(
    held: dict[int, HeldShare], threads: dict[int, ThreadTruth], pid: int
) -> dict[int, HeldShare]:
    """``held`` keyed by native thread id.  py-spy names threads by their
    native id where it can read it (3.11+ keeps it in the thread state) and by
    their pthread id otherwise: those are matched by thread name."""
    names: dict[str, list[int]] = defaultdict(list)
    for t in threads.values():
        names[t.name].append(t.tid)
    out = {}
    for key, h in held.items():
        if key in threads or key == pid:
            out[key] = h
        elif len(names.get(h.name, [])) == 1:
            out[names[h.name][0]] = h
        elif h.name == "MainThread":
            out[pid] = h
        else:
            out[key] = h
    return out


# ------------------------------------------------------------------ self-measurement


@dataclass(frozen=True)
class ThreadTruth:
    """One worker of tests/targets/gil_work.py, from its own first to its last line."""

    tid: int
    name: str
    role: str
    ops: int
    lifetime_s: float
    cpu_s: float  # schedstat: ns on a CPU
    thread_time_s: float
    run_delay_s: float  # schedstat: ns runnable, waiting on a run queue
    voluntary: int
    involuntary: int

    @property
    def off_cpu_s(self) -> float:
        """Blocked time: neither on a CPU nor waiting for one."""
        return max(0.0, self.lifetime_s - self.cpu_s - self.run_delay_s)


def thread_truths(report: dict[str, Any]) -> dict[int, ThreadTruth]:
    """Per tid, from the JSON that tests/targets/gil_work.py prints."""
    out = {}
    for th in report["threads"]:
        a, b = th["start"], th["end"]
        out[th["tid"]] = ThreadTruth(
            tid=th["tid"],
            name=th["name"],
            role=th["role"],
            ops=th["ops"],
            lifetime_s=b["t"] - a["t"],
            cpu_s=(b["cpu_ns"] - a["cpu_ns"]) / 1e9,
            thread_time_s=b["thread_time"] - a["thread_time"],
            run_delay_s=(b["run_delay_ns"] - a["run_delay_ns"]) / 1e9,
            voluntary=b["voluntary_ctxt_switches"] - a["voluntary_ctxt_switches"],
            involuntary=b["nonvoluntary_ctxt_switches"] - a["nonvoluntary_ctxt_switches"],
        )
    return out


def target_report(stdout: str) -> dict[str, Any]:
    """The last JSON object with ``threads`` printed on ``stdout``."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if "threads" in obj:
                    return obj
    raise ValueError(f"no target report in the output: {stdout[-500:]!r}")
