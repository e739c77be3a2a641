"""py-spy beside the sampler: stack dumps (early, on long waits, at exit,
periodic, on demand, final) and profiles (``py-spy record``, run by
:mod:`.pyspy_record`).

Every dump is a background ``py-spy dump --json --pid PID`` per Python
process, started from the loop's ``tick`` and collected on a later one (the
loop never waits); :class:`~.pyspy_policy.DumpPolicy` says when. Output goes
to a temporary file (a pipe could fill and stall py-spy), each dump under a
timeout. Results: ``pyspy/dumps.jsonl`` (format: docs/pyspy.md).

py-spy failing (missing, no ptrace permission, unknown interpreter version,
hanging) is reported once on stderr and in meta.json, and never stops the
run: the kernel samples go on.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .observers import Observer
from .pyspy_policy import UNSTOPPED, WATCH_NS, DumpPolicy
from .pyspy_record import Profiles, private_file
from .pyspy_tools import (
    ENV_PYSPY,
    PID_FILE,
    append_line,
    explain,
    find_pyspy,
    is_python_process,
    request_dump,
    thread_record,
    unlink_quietly,
    unnamed,
    written_ns,
)
from .schema import PYSPY_DIR

__all__ = [
    "ENV_PYSPY",
    "PySpyObserver",
    "explain",
    "find_pyspy",
    "is_python_process",
    "request_dump",
]

DUMPS_FILE = "dumps.jsonl"
# A pid's dump failing this many times in a row (other than for permission)
# is reported; fewer are retried silently (counted in meta.json).
FAILS_BEFORE_REPORT = 3
# With a numeric --dump-interval, the first periodic round comes at most
# this long after the start (the early dumps come before it).
FIRST_DUMP_S = 0.5
# While dumps run, the loop looks at them this often (to store them, to
# time out a stuck one); between dumps it wakes Python only when the policy
# or a periodic dump asks.
COLLECT_POLL_NS = 100_000_000
# A process that is not Python yet may exec one (a shell script, a pyenv
# shim): for this long after it is seen, it is looked at as often as the
# policy watches rows.
EXEC_WATCH_NS = 1_000_000_000


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


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
    loop_threshold: float = 0.1  # seconds: an event loop stall gets a dump from half this in
    name: str = "py-spy"

    run_dir: Path = field(default=Path("."), init=False)
    exe: str | None = field(default=None, init=False)
    policy: DumpPolicy = field(default_factory=DumpPolicy, init=False)
    _inflight: dict[int, _Dump] = field(default_factory=dict, init=False)
    _stop_to_read: set[int] = field(default_factory=set, init=False)  # pids: no --nonblocking
    _python: dict[int, tuple[str, bool]] = field(default_factory=dict, init=False)
    _pids: list[int] = field(default_factory=list, init=False)
    _seen: dict[int, int] = field(default_factory=dict, init=False)  # pid -> first seen
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
    _profile_pid: int = field(default=0, init=False)  # the process profiled; 0: none yet
    _root: int = field(default=0, init=False)
    _streak: dict[int, int] = field(default_factory=dict, init=False)
    _transient: int = field(default=0, init=False)
    _turn: int = field(default=0, init=False)  # auto: the pid dumped last
    _dump_cpu_s: float = field(default=0.0, init=False)  # py-spy dumps' CPU, measured
    _dumps_done: int = field(default=0, init=False)
    _batches: list[tuple[int, list[tuple]]] = field(default_factory=list, init=False)
    _read: int = field(default=0, init=False)  # how many of _batches were read
    _first: object = field(default=None, init=False)  # _batches[0] then

    def __post_init__(self) -> None:
        self.policy = DumpPolicy(
            auto=self.interval != 0,
            interval=self.interval,
            loop_stall_ns=round(self.loop_threshold * 1e9 / 2),
        )

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
        now = time.monotonic_ns()
        first = self._interval_s(1) if self.interval is None else min(self.interval, FIRST_DUMP_S)
        self._next_ns = now + round(first * 1e9)
        self._seen[root_pid] = now
        self._tick_python(now)

    def watch_threads(self, batches: list[tuple[int, list[tuple]]]) -> None:
        self._batches = batches

    def next_tick_ns(self) -> int | None:
        now = time.monotonic_ns()
        times = []
        if self._inflight:
            times.append(now + COLLECT_POLL_NS)
        if self._disabled:
            return min(times, default=None)
        watch = self.policy.next_ns(now)
        if watch is not None:
            times.append(watch)
        if any(now - t < EXEC_WATCH_NS for t in self._seen.values()) or (
            self.profile and not self._profile_pid
        ):
            times.append(now + WATCH_NS)  # a young process may exec python
        # (With no Python process at the last round, the next flush or a new
        # process, which both run Python, are soon enough for periodic dumps.)
        if self.interval != 0 and not self._no_python:
            times.append(self._next_ns)
        return min(times, default=None)

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
            for pid in pids:
                self._seen.setdefault(pid, t_ns)
            for pid in [p for p in self._seen if p not in pids]:
                del self._seen[pid]
        self._pids = pids
        if self._inflight:
            self._collect(wait=False)
        if self._disabled:
            return
        self._tick_python(t_ns)
        if self._demand:
            self._demand = False
            if not self._dump_all("demand", t_ns) and not self.quiet:
                print("circuit: SIGUSR1: no Python process to dump", file=sys.stderr, flush=True)
        for pid, trigger in self.policy.due(t_ns, self._inflight):
            self._start_dump(pid, trigger)
        if self.interval != 0 and t_ns >= self._next_ns:
            if self.interval is None:
                started = self._dump_turn("periodic")
            else:
                started = self._dump_all("periodic", t_ns)
            self._no_python = not started and not self._inflight
            step = round(self._interval_s(started) * 1e9)
            self._next_ns += step * max(1, (t_ns - self._next_ns) // step + 1)

    def _tick_python(self, t_ns: int) -> None:
        """Tell the policy which processes are Python and what their threads
        did; start the profile on the first Python process."""
        pol = self.policy
        pol.python(t_ns, [p for p in self._pids if self._is_python(p)])
        batches = self._batches
        if not batches or batches[0] is not self._first:
            self._read = 0  # flushed (emptied in place) since the last look
        if pol.procs:
            pol.rows(batches[self._read :])
        self._read = len(batches)
        self._first = batches[0] if batches else None
        if self.profile and not self._profile_pid and pol.root:
            self._start_profiles(pol.root)

    def _interval_s(self, dumps: int) -> float:
        """Seconds to the next periodic round, which will take ``dumps`` dumps."""
        if self._dumps_done:
            self.policy.cost(self._dump_cpu_s / self._dumps_done)
        return self.policy.periodic_s(dumps)

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
        if self.profile and not self._profile_pid and not self._disabled:
            self._fail(
                "not-python",
                f"--profile: no Python process ran under PID {self._root} "
                "(neither it nor a process it started)",
            )
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
        out: dict[str, Any] = {"pyspy": info}
        if profiles:
            info["profiles"] = profiles
            entry: dict[str, Any] = {"pid": self._profile_pid}
            for path in profiles:
                entry["speedscope" if path.endswith(".json") else "flamegraph"] = path
            out["profiles"] = [entry]
        out["warnings"] = [f["message"] for f in self._failures.values()]
        return out

    # -- dumps -----------------------------------------------------------------

    def _args(self, trigger: str = "", pid: int = 0) -> list[str]:
        assert self.exe is not None
        args = [self.exe, "dump", "--json"]
        if self.native:
            args.append("--native")  # needs a stopped process: never with --nonblocking
        elif self.nonblocking or (trigger in UNSTOPPED and pid not in self._stop_to_read):
            # A long wait's stack does not move; stopping the target would cut
            # the very wait looked at (restarted as restart_syscall, its fd lost).
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
                    [*self._args(trigger, pid), "--pid", str(pid)],
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
        self.policy.started(pid, t0, trigger)

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
                unlink_quietly(d.out, d.err)
                del self._inflight[pid]
                continue
            del self._inflight[pid]
            self._finish(d, code)

    def _finish(self, d: _Dump, code: int) -> None:
        end = written_ns(d.out, d.t_ns)
        self.policy.finished(d.pid, end)
        try:
            raw = d.out.read_bytes()
            err = d.err.read_text(errors="replace")
        except OSError:
            raw, err = b"", ""
        unlink_quietly(d.out, d.err)
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
            if kind != "permission" and self.policy.failed(d.pid, end):
                self._transient += 1  # an interpreter still starting: retried soon
                return
            n = self._streak[d.pid] = self._streak.get(d.pid, 0) + 1
            if kind != "permission" and n < FAILS_BEFORE_REPORT:
                # A running process is read while it changes (nonblocking):
                # transient, retry what was asked for.
                self._transient += 1
                if d.trigger in ("demand", "final", "exit"):
                    self._start_dump(d.pid, d.trigger)
                return
            self._fail(kind, f"py-spy cannot dump PID {d.pid}: {msg}")
            return
        self._streak.pop(d.pid, None)
        self.policy.succeeded(d.pid)
        if "--nonblocking" in d.proc.args and not self.nonblocking and unnamed(threads):
            # py-spy names the OS threads of a running 3.10 only by stopping it
            self._stop_to_read.add(d.pid)
            return self._start_dump(d.pid, d.trigger)
        rec = {
            "t_ns": d.t_ns,
            "end_ns": end,
            "pid": d.pid,
            "trigger": d.trigger,
            "threads": [thread_record(t) for t in threads if isinstance(t, dict)],
        }
        try:
            append_line(self._out, rec)
        except OSError as e:
            self._fail("write", f"cannot write py-spy dumps: {e.strerror}; dumps stop")
            self._disabled = "write"
            return
        self._counts[d.trigger] = self._counts.get(d.trigger, 0) + 1
        if d.trigger == "demand" and not self.quiet:
            print(
                f"circuit: py-spy dump of PID {d.pid} ({len(rec['threads'])} threads) "
                f"appended to {self._out}",
                file=sys.stderr,
                flush=True,
            )

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
        """Profile ``pid``, the first Python process of the run (the root, or
        the one a shell script or a pyenv shim started), and its children."""
        assert self.exe is not None
        self._profile_pid = pid
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
