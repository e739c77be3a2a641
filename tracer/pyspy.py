"""py-spy beside the sampler: periodic / on-demand / final stack dumps, and
profiles (``py-spy record``, run by :mod:`.pyspy_record`).

Every dump is a background ``py-spy dump --json --pid PID`` (one per traced
Python process: py-spy's ``--subprocesses`` does not return children in
JSON), started from the sampling loop's ``tick`` and collected on a later
tick, so the loop never waits for py-spy.  Output goes to a temporary file
(a pipe could fill and stall py-spy); every dump is bounded by a timeout and
killed past it.  Results: ``pyspy/dumps.jsonl`` in the run folder, one line
per dump (format: docs/pyspy.md).

py-spy failing (missing, no ptrace permission, unknown interpreter version,
hanging) is reported once on stderr and in meta.json, and never stops the
run: the kernel samples go on.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuit.marks import ENV_RUN_DIR

from .observers import Observer
from .procfs import is_python_image
from .pyspy_record import Profiles, private_file
from .schema import PYSPY_DIR

DUMPS_FILE = "dumps.jsonl"
# A pid's dump failing this many times in a row (other than for permission)
# is reported; fewer are retried silently (counted in meta.json).
FAILS_BEFORE_REPORT = 3
# The first periodic dump waits this long (at most): an interpreter that is
# still starting cannot be dumped yet.
FIRST_DUMP_S = 0.5
# The default periodic interval ("auto") keeps py-spy's own CPU time under
# this share of one core, from the start: a dump costs ~10 ms of CPU here
# (py-spy starting, reading the target's memory), plus a few ms during which
# a blocking dump holds the target.  So auto dumps one Python process at a
# time, in turn: the first ~2.4 s in, then one every ~2 s (three processes:
# each every ~6 s); never more than once a second.  (A first round of every
# process early on would spend a short job's whole budget at once.)
AUTO_BUDGET = 0.005
AUTO_MIN_S = 1.0
AUTO_GUESS_S = 0.012  # CPU per dump assumed until one has been measured
# While dumps run, the loop looks at them this often (to store them, to
# time out a stuck one); between dumps it wakes Python only when one is due.
COLLECT_POLL_NS = 100_000_000
PID_FILE = "tracer.pid"
ENV_PYSPY = "CIRCUIT_PYSPY"  # path of the py-spy executable to use (tests point it at fakes)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def find_pyspy(explicit: str | None = None) -> str | None:
    """The py-spy executable: explicit path, $CIRCUIT_PYSPY, PATH, or beside our python."""
    cand = explicit or os.environ.get(ENV_PYSPY)
    if cand:
        return cand if os.access(cand, os.X_OK) else None
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if os.access(beside, os.X_OK) else None


def is_python_process(pid: int) -> bool:
    """The executable is python, or libpython is mapped (embedded interpreters)."""
    try:
        if is_python_image(os.readlink(f"/proc/{pid}/exe")):
            return True
        with open(f"/proc/{pid}/maps", "rb") as f:
            return b"/libpython" in f.read()
    except OSError:
        return False


def explain(stderr: str, code: int | None) -> tuple[str, str]:
    """(kind, one-line reason with what would allow it) for a failed py-spy run."""
    low = stderr.lower()
    if "permission denied" in low or "operation not permitted" in low or "eperm" in low:
        return (
            "permission",
            "py-spy has no ptrace permission: run circuit as root or with CAP_SYS_PTRACE "
            "(containers: --cap-add SYS_PTRACE), or set kernel.yama.ptrace_scope=0",
        )
    if "version" in low and ("python" in low or "unsupported" in low or "unknown" in low):
        return (
            "version",
            "py-spy does not know this interpreter version: upgrade py-spy (pip install -U py-spy)",
        )
    if "no such process" in low:
        return ("gone", "the process exited")
    first = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "")
    return ("error", f"py-spy failed (exit {code}): {first or 'no message'}")


@dataclass
class _Dump:
    pid: int
    trigger: str
    t_ns: int
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    deadline: float


@dataclass
class PySpyObserver(Observer):
    """Options mirror the CLI: see ``circuit run --help``."""

    interval: float | None = None  # seconds between periodic dumps; 0: none; None: auto
    nonblocking: bool = False  # measured: blocking dumps cost the target less (docs/pyspy.md)
    native: bool = False
    final: bool = True
    profile: bool = False
    gil: bool = False
    idle: bool = False
    timeout: float = 5.0
    pyspy: str | None = None
    quiet: bool = False
    name: str = "py-spy"

    run_dir: Path = field(default=Path("."), init=False)
    exe: str | None = field(default=None, init=False)
    _inflight: dict[int, _Dump] = field(default_factory=dict, init=False)
    _python: dict[int, tuple[str, bool]] = field(default_factory=dict, init=False)
    _pids: list[int] = field(default_factory=list, init=False)
    _next_ns: int = field(default=0, init=False)
    _seq: int = field(default=0, init=False)
    _out: Path = field(default=Path("."), init=False)
    _tmp: Path | None = field(default=None, init=False)
    _failures: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    _warned: bool = field(default=False, init=False)
    _disabled: str = field(default="", init=False)
    _counts: dict[str, int] = field(default_factory=dict, init=False)
    _final_done: bool = field(default=False, init=False)
    _demand: bool = field(default=False, init=False)
    _no_python: bool = field(default=False, init=False)  # the last periodic round found none
    _profiles: Profiles | None = field(default=None, init=False)  # py-spy record
    _root: int = field(default=0, init=False)
    _streak: dict[int, int] = field(default_factory=dict, init=False)
    _transient: int = field(default=0, init=False)
    _turn: int = field(default=0, init=False)  # auto: the pid dumped last
    _dump_cpu_s: float = field(default=0.0, init=False)  # py-spy dumps' CPU, measured
    _dumps_done: int = field(default=0, init=False)

    # -- hooks -----------------------------------------------------------------

    def start(self, run_dir: Path, root_pid: int) -> None:
        self.run_dir = Path(run_dir) / PYSPY_DIR
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        pid_file = self.run_dir / PID_FILE
        pid_file.write_text(f"{os.getpid()}\n")
        os.chmod(pid_file, 0o600)
        self._out = self.run_dir / DUMPS_FILE
        # py-spy's output lands in a private temporary folder, not the run
        # folder: nothing there is held open for writing between dumps.
        self._tmp = Path(tempfile.mkdtemp(prefix="circuit-pyspy-"))
        self._root = root_pid
        self._pids = [root_pid]
        self.exe = find_pyspy(self.pyspy)
        if self.exe is None:
            where = self.pyspy or os.environ.get(ENV_PYSPY) or "py-spy"
            self._fail(
                "missing",
                f"py-spy not found ({where}): pip install py-spy, or put it on PATH",
            )
            self._disabled = "missing"
            return
        first = self._interval_s(1) if self.interval is None else min(self.interval, FIRST_DUMP_S)
        self._next_ns = time.monotonic_ns() + round(first * 1e9)
        if self.profile:
            self._start_profiles(root_pid)

    def next_tick_ns(self) -> int | None:
        if self._inflight:
            return time.monotonic_ns() + COLLECT_POLL_NS
        if self._disabled or self.interval == 0 or self._no_python:
            # (With no Python process at the last round, the next flush or a
            # new process, which both run Python, is soon enough to look again.)
            return None
        return self._next_ns

    def tick(self, t_ns: int, pids: Iterable[int]) -> None:
        try:
            self._tick(t_ns, pids)
        except Exception as e:  # py-spy trouble must never cost the run
            self._fail("error", f"py-spy observer failed: {e}; kernel sampling goes on")
            self._disabled = "error"

    def _tick(self, t_ns: int, pids: Iterable[int]) -> None:
        pids = list(pids)
        if pids != self._pids:
            self._no_python = False  # a new process may be a Python one
        self._pids = pids
        if self._inflight:
            self._collect(wait=False)
        if self._disabled:
            return
        if self._demand:
            self._demand = False
            self._dump_all("demand", t_ns)
        if self.interval != 0 and t_ns >= self._next_ns:
            if self.interval is None:
                started = self._dump_turn("periodic")
            else:
                started = self._dump_all("periodic", t_ns)
            self._no_python = not started and not self._inflight
            step = round(self._interval_s(started) * 1e9)
            self._next_ns += step * max(1, (t_ns - self._next_ns) // step + 1)

    def _interval_s(self, dumps: int) -> float:
        """Seconds to the next periodic round, which will take ``dumps`` dumps."""
        if self.interval is not None:
            return self.interval
        per_dump = self._dump_cpu_s / self._dumps_done if self._dumps_done else AUTO_GUESS_S
        return max(AUTO_MIN_S, dumps * per_dump / AUTO_BUDGET)

    def on_demand(self) -> None:
        self._demand = True  # the next tick starts the dumps (a few ms away)

    def on_interrupt(self) -> None:
        """Ctrl-C / kill: dump now, while the target may still be in its hang."""
        try:
            self.final_dump()
        except Exception as e:
            self._fail("error", f"final py-spy dump failed: {e}")

    def final_dump(self) -> None:
        if self._disabled or self._final_done or not self.final:
            return
        self._final_done = True
        self._dump_all("final", time.monotonic_ns())
        self._collect(wait=True)

    def stop(self, reason: str) -> dict[str, Any]:
        if reason != "target exited":
            self.final_dump()  # attach: the target is still there (duration, Ctrl-C)
        self._collect(wait=True)
        profiles = self._profiles.stop() if self._profiles else []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        info: dict[str, Any] = {
            "executable": self.exe,
            "interval_s": "auto" if self.interval is None else self.interval,
            "dump_cpu_s": round(self._dump_cpu_s, 4),
            "nonblocking": self.nonblocking and not self.native,
            "native": self.native,
            "dumps": dict(self._counts),
            "failures": list(self._failures.values()),
            "transient_failures": self._transient,
        }
        if profiles:
            info["profiles"] = profiles
        warnings = [f["message"] for f in self._failures.values()]
        return {"pyspy": info, "warnings": warnings}

    # -- dumps -----------------------------------------------------------------

    def _args(self) -> list[str]:
        assert self.exe is not None
        args = [self.exe, "dump", "--json"]
        if self.native:
            args.append("--native")  # needs a stopped process: never with --nonblocking
        elif self.nonblocking:
            args.append("--nonblocking")
        return args

    def _dump_all(self, trigger: str, t_ns: int) -> int:
        started = 0
        for pid in self._pids:
            if pid not in self._inflight and self._is_python(pid):
                self._start_dump(pid, trigger)
                started += 1
        return started

    def _dump_turn(self, trigger: str) -> int:
        """Dump the next Python process in turn (in pid order, wrapping round)."""
        pids = sorted(p for p in self._pids if p not in self._inflight and self._is_python(p))
        if not pids:
            return 0
        pid = next((p for p in pids if p > self._turn), pids[0])
        self._turn = pid
        self._start_dump(pid, trigger)
        return 1

    def _is_python(self, pid: int) -> bool:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return False
        known = self._python.get(pid)
        if known is None or known[0] != exe:  # new, or exec'd since
            known = (exe, is_python_process(pid))
            self._python[pid] = known
        return known[1]

    def children(self) -> list[int]:
        recorders = self._profiles.pids() if self._profiles else []
        return [d.proc.pid for d in self._inflight.values()] + recorders

    def _start_dump(self, pid: int, trigger: str) -> None:
        self._seq += 1
        if self._tmp is None:
            return
        out = self._tmp / f"dump-{self._seq}.json"
        err = self._tmp / f"dump-{self._seq}.err"
        t0 = time.monotonic_ns()
        try:
            with private_file(out) as fo, private_file(err) as fe:
                proc = subprocess.Popen(
                    [*self._args(), "--pid", str(pid)],
                    stdin=subprocess.DEVNULL,
                    stdout=fo,
                    stderr=fe,
                    start_new_session=True,  # a terminal's Ctrl-C must not kill the final dump
                )
        except OSError as e:
            self._fail("exec", f"cannot run py-spy ({self.exe}): {e.strerror}")
            self._disabled = "exec"
            return
        self._inflight[pid] = _Dump(
            pid, trigger, t0, proc, out, err, time.monotonic() + self.timeout
        )

    def _collect(self, wait: bool) -> None:
        # The children reaped here are py-spy dumps only (the target and
        # py-spy record are reaped elsewhere): their CPU is the dumps' cost.
        before = _children_cpu_s()
        n = len(self._inflight)
        self._collect_once(wait)
        while wait and self._inflight:  # retries started while collecting
            self._collect_once(wait)
        done = n - len(self._inflight)
        if done > 0:
            self._dump_cpu_s += _children_cpu_s() - before
            self._dumps_done += done

    def _collect_once(self, wait: bool) -> None:
        for pid, d in list(self._inflight.items()):
            code = d.proc.poll()
            if code is None and wait:
                try:
                    code = d.proc.wait(max(0.0, d.deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    code = None
            if code is None:
                if time.monotonic() < d.deadline:
                    continue
                d.proc.kill()
                d.proc.wait()
                self._fail(
                    "timeout",
                    f"py-spy dump of PID {pid} did not finish within {self.timeout:g} s "
                    "and was killed (a hung py-spy or target); kernel sampling goes on",
                )
                self._cleanup(d)
                del self._inflight[pid]
                continue
            del self._inflight[pid]
            self._finish(d, code)

    def _finish(self, d: _Dump, code: int) -> None:
        end = time.monotonic_ns()
        try:
            raw = d.out.read_bytes()
            err = d.err.read_text(errors="replace")
        except OSError:
            raw, err = b"", ""
        self._cleanup(d)
        threads = None
        if code == 0:
            try:
                threads = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                threads = None
        if not isinstance(threads, list):
            if not os.path.exists(f"/proc/{d.pid}"):
                return  # exited while we dumped it: not a failure
            kind, msg = explain(err, code)
            if kind == "gone":
                return
            n = self._streak[d.pid] = self._streak.get(d.pid, 0) + 1
            if kind != "permission" and n < FAILS_BEFORE_REPORT:
                # A running process is read while it changes (nonblocking), or
                # the interpreter is still starting: transient, retry.
                self._transient += 1
                if d.trigger != "periodic":
                    self._start_dump(d.pid, d.trigger)
                return
            self._fail(kind, f"py-spy cannot dump PID {d.pid}: {msg}")
            return
        self._streak.pop(d.pid, None)
        rec = {
            "t_ns": d.t_ns,
            "end_ns": end,
            "pid": d.pid,
            "trigger": d.trigger,
            "threads": [_thread(t) for t in threads if isinstance(t, dict)],
        }
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        try:
            # Opened per dump (about one a second), never held open: a held
            # writable file would keep the folder's filesystem from being
            # remounted read-only, and a kill leaves whole lines behind.
            # Owner only: stacks name files and functions.
            fd = os.open(self._out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as e:
            self._fail("write", f"cannot write py-spy dumps: {e.strerror}; dumps stop")
            self._disabled = "write"
            return
        self._counts[d.trigger] = self._counts.get(d.trigger, 0) + 1

    @staticmethod
    def _cleanup(d: _Dump) -> None:
        for f in (d.out, d.err):
            try:
                f.unlink()
            except OSError:
                pass

    def _fail(self, kind: str, message: str) -> None:
        f = self._failures.setdefault(kind, {"kind": kind, "message": message, "count": 0})
        f["count"] += 1
        if kind == "write":
            return  # the run folder is unwritable: the session reports that itself
        if not self._warned:
            self._warned = True  # one line, once: the rest goes to meta.json
            if not self.quiet:
                print(f"circuit: {message}", file=sys.stderr, flush=True)

    # -- profiles ----------------------------------------------------------------

    def _start_profiles(self, pid: int) -> None:
        if not self._is_python(pid):
            self._fail("not-python", f"--profile: PID {pid} is not a Python process")
            return
        assert self.exe is not None
        self._profiles = Profiles(
            self.exe,
            self.run_dir,
            self._fail,
            gil=self.gil,
            idle=self.idle,
            native=self.native,
            timeout=self.timeout,
        )
        self._profiles.start(pid)


def _thread(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "tid": t.get("os_thread_id"),
        "thread_id": t.get("thread_id"),
        "name": t.get("thread_name"),
        "owns_gil": t.get("owns_gil"),
        "active": t.get("active"),
        "frames": [
            {"name": f.get("name"), "file": f.get("filename"), "line": f.get("line")}
            for f in t.get("frames") or []
        ],
    }


def request_dump(run_dir: str | os.PathLike[str] | None = None) -> int:
    """Ask the tracer writing ``run_dir`` (default: the current run) for a dump now.

    Sends SIGUSR1 to the circuit process tracing us; returns its PID.
    """
    from circuit.errors import CircuitError

    where = run_dir or os.environ.get(ENV_RUN_DIR)
    if not where:
        raise CircuitError(f"not running under circuit (no {ENV_RUN_DIR}): no tracer to ask")
    try:
        pid = int((Path(where) / PYSPY_DIR / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        raise CircuitError(f"{where}: no py-spy observer runs for this run") from None
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        raise CircuitError(f"the tracer (PID {pid}) is gone") from None
    return pid
