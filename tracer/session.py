"""A tracing session: start or find the target, sample it, finalise the run.

Signals.  circuit blocks SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
SIGCHLD and takes them with ``sigtimedwait`` as its inter-sample sleep, so a
signal wakes the loop at once and never raises KeyboardInterrupt in the
middle of a write.  ``siginfo.si_code`` tells a terminal's Ctrl-C (sent by
the kernel to the whole foreground process group, target included) from a
``kill`` aimed at circuit alone, which we forward.
"""

from __future__ import annotations

import getpass
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from circuit.errors import CircuitError
from circuit.marks import ENV_RUN_DIR

from . import merge
from .backends import make_backend
from .observers import Observer
from .prctl import PR_SET_CHILD_SUBREAPER, prctl
from .redact import redact_argv, redact_env
from .sampler import LoopStats, Sampler, run_loop
from .schema import FORMAT_VERSION
from .writer import RunWriter, prepare_run_dir

# How often, at most, the sampling loop also asks waitid() whether the
# target exited, when Python runs (it normally learns it from SIGCHLD, which
# also ends a C burst at once).
EXIT_CHECK_NS = 100_000_000

# Signals that would kill circuit by default and mean nothing to it: `run`
# passes them on to the target (as `timeout` or an init would); `attach`
# ignores them (the target is not circuit's to signal).
PASSED_ON = {signal.SIGUSR2, signal.SIGALRM}
SIGNALS = {
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGCHLD,
    *PASSED_ON,
}
SI_KERNEL = 0x80


class SessionError(CircuitError):
    """A user-facing failure: printed as one line, no traceback."""


@dataclass
class Options:
    out: Path
    rate: float = 100.0
    backend: str = "auto"
    force: bool = False
    fds: bool = True
    duration: float | None = None
    quiet: bool = False
    redact: bool = False  # mask secret-looking command-line values (tracer/redact.py)
    record_env: bool = False  # keep the target's environment (secret-looking values masked)
    extra_meta: dict[str, Any] = field(default_factory=dict)
    on_tick: Callable[[int], None] | None = None
    observers: list[Observer] = field(default_factory=list)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def base_meta(mode: str, opts: Options) -> dict[str, Any]:
    from circuit import __version__

    uname = platform.uname()
    return {
        "format_version": FORMAT_VERSION,
        "tool": "circuit",
        "circuit_version": __version__,
        "mode": mode,
        "finalized": False,
        "command": [],
        "cwd": os.getcwd(),
        "interpreter": sys.executable,
        "python_version": platform.python_version(),
        "host": socket.gethostname(),
        "user": _user(),
        "kernel": uname.release,
        "system": uname.system,
        "machine": uname.machine,
        "cpus": os.cpu_count(),
        "clock_ticks_per_s": os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100,
        "backend": "",
        "rate_hz_requested": opts.rate,
        "start_time": _now_iso(),
        "start_ns": time.monotonic_ns(),
        "warnings": [],
        **opts.extra_meta,
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def _check_rate(rate: float) -> None:
    if not (0 < rate <= 10_000):
        raise SessionError(f"--rate must be more than 0 and at most 10000 Hz, got {rate:g}")


def _open_run(opts: Options, mode: str) -> tuple[RunWriter, dict[str, Any]]:
    try:
        path = prepare_run_dir(opts.out, opts.force)
    except FileExistsError as e:
        raise SessionError(str(e)) from None
    except PermissionError:
        raise SessionError(f"output folder {opts.out} is not writable") from None
    except OSError as e:
        raise SessionError(f"cannot create output folder {opts.out}: {e.strerror}") from None
    meta = base_meta(mode, opts)
    return RunWriter(path, meta), meta


def _start_observers(
    opts: Options, writer: RunWriter, sampler: Sampler
) -> tuple[Callable[[int], None], Callable[[], int | None]]:
    """Start the observers; return the loop's per-tick callback, and when
    the observers next need it (run_loop's ``due``)."""
    for o in opts.observers:
        o.start(writer.path, sampler.root_pid)
    hooks = [o.tick for o in opts.observers]
    if opts.on_tick is not None:
        hooks.append(lambda t, _pids: opts.on_tick(t))  # type: ignore[misc]

    def on_tick(t_ns: int) -> None:
        for h in hooks:
            h(t_ns, sampler.traced.keys())

    def due() -> int | None:
        times = []
        for o in opts.observers:
            try:
                t = o.next_tick_ns()
            except Exception:  # an observer must never cost us the run
                t = None
            if t is not None:
                times.append(t)
        return min(times, default=None)

    return on_tick, due


def _stop_observers(opts: Options, reason: str) -> tuple[dict[str, Any], list[str]]:
    updates: dict[str, Any] = {}
    warnings: list[str] = []
    for o in opts.observers:
        try:
            u = dict(o.stop(reason))
        except Exception as e:  # an observer must never cost us the run
            u = {"warnings": [f"{o.name} failed while stopping: {e}"]}
        warnings += u.pop("warnings", [])
        updates.update(u)
    return updates, warnings


# Below this share of the requested rate, a run says the sampler fell behind.
BEHIND_SHARE = 0.9


def _behind(stats: LoopStats, rate: float) -> str | None:
    """A warning if the loop held much less than the requested rate (over
    enough samples to tell): time per state is then coarser than asked."""
    if stats.samples < 20 or stats.achieved_hz >= BEHIND_SHARE * rate:
        return None
    return (
        f"the sampler kept {stats.achieved_hz:.1f} of the {rate:g} Hz asked "
        f"({stats.missed} deadlines missed): the machine was busy, or the target "
        "has too many threads for this rate (docs/performance.md)"
    )


def _finish(
    writer: RunWriter,
    sampler: Sampler,
    stats: LoopStats,
    extra: dict[str, Any],
    opts: Options,
    reason: str,
) -> dict[str, Any]:
    sampler.close()
    meta = writer.meta
    obs_updates, obs_warnings = _stop_observers(opts, reason)
    extra = {**obs_updates, **extra}
    warnings = list(meta.get("warnings", [])) + sampler.backend.warnings + obs_warnings
    behind = _behind(stats, opts.rate)
    if behind:
        warnings.append(behind)
        _say(opts, f"warning: {behind}")
    wall = (stats.last_ns - meta["start_ns"]) / 1e9
    updates = {
        "end_time": _now_iso(),
        "end_ns": stats.last_ns,
        "wall_s": round(wall, 6),
        "samples": stats.samples,
        "thread_samples": sampler.thread_samples,
        "rate_hz_achieved": round(stats.achieved_hz, 3),
        "missed_deadlines": stats.missed,
        "sampler_cpu_s": round(stats.cpu_s, 6),
        "sampler_cpu_share": round(stats.cpu_s / wall, 6) if wall > 0 else 0.0,
        "processes_seen": len(sampler.seen),
        "tick": sampler.tick_impl,
        "samples_in_c_loop": stats.c_samples,
        "gil_sources": {str(pid): src for pid, src in sorted(sampler.gil_sources.items())},
        "warnings": warnings,
        **extra,
    }
    if sampler.thread_samples > merge.MERGE_ROWS:
        # ~1 s per million rows, read twice and sorted in buckets (tracer/merge.py)
        _say(opts, f"sorting {sampler.thread_samples:,} thread-samples into {writer.path}")
    try:
        writer.finalize(updates)
    except OSError as e:
        raise SessionError(
            f"could not finish writing the run in {writer.path}: {e.strerror}; "
            "what was flushed before stays readable"
        ) from None
    return writer.meta


class _SignalWait:
    """The loop's sleep: sigtimedwait on the blocked signals."""

    def __init__(self, handler: Callable[[signal.struct_siginfo], bool]) -> None:
        self.handler = handler

    def __call__(self, timeout: float) -> bool:
        stop = False
        while True:
            info = signal.sigtimedwait(SIGNALS, max(timeout, 0.0))
            if info is None:
                return stop
            stop = self.handler(info) or stop
            timeout = 0.0  # drain what is pending, then go back to sampling


def _block_signals_early() -> set[int]:
    """Block SIGNALS, before the run's writer loads pyarrow: the threads it
    starts (OpenBLAS, through numpy) inherit the mask.  A thread that does not
    block them would take a signal sent to circuit: SIGUSR1 or SIGTERM would
    kill circuit there, SIGINT raise KeyboardInterrupt mid-sample."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


def _restore_signals(old: set[int]) -> None:
    # Drop what is still pending (SIGCHLD from py-spy, say) before unblocking.
    while signal.sigtimedwait(SIGNALS, 0) is not None:
        pass
    signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _say(opts: Options, msg: str) -> None:
    if not opts.quiet:
        print(f"circuit: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- run


def run_command(cmd: list[str], opts: Options) -> tuple[int, dict[str, Any]]:
    """Start ``cmd``, trace it until it exits; return (exit status, meta)."""
    _check_rate(opts.rate)
    if not cmd:
        raise SessionError("no command given: circuit run [options] -- CMD ARGS...")
    exe = shutil.which(cmd[0])
    if exe is None:
        if os.path.sep in cmd[0] and os.path.isdir(cmd[0]):
            raise SessionError(f"cannot run {cmd[0]}: it is a directory")
        if os.path.sep in cmd[0] and os.path.exists(cmd[0]):
            raise SessionError(f"permission denied: {cmd[0]} is not executable")
        raise SessionError(f"command not found: {cmd[0]}")
    backend = make_backend(opts.backend)
    old_mask = _block_signals_early()
    try:
        writer, meta = _open_run(opts, "run")
        meta.update(command=redact_argv(cmd) if opts.redact else cmd, backend=backend.name)
        env = dict(os.environ)
        env[ENV_RUN_DIR] = str(writer.path.resolve())
        if opts.record_env:
            meta["environment"] = redact_env(env)
        writer.write_meta()
        adopting = _child_subreaper(True)
        proc = subprocess.Popen(
            cmd,
            env=env,
            # The child must not inherit our blocked mask.
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old_mask),
        )
    except OSError as e:
        _child_subreaper(False)
        _restore_signals(old_mask)
        raise SessionError(f"cannot start {cmd[0]}: {e.strerror}") from None
    except BaseException:
        _child_subreaper(False)
        _restore_signals(old_mask)
        raise
    meta.update(root_pid=proc.pid, start_ns=time.monotonic_ns(), start_time=_now_iso())

    sampler = Sampler(
        backend,
        writer,
        proc.pid,
        exclude={os.getpid()},
        fds=opts.fds,
        redact=redact_argv if opts.redact else None,
    )
    sampler.keep_zombie_root = True
    if adopting:
        sampler.adopter = os.getpid()
        sampler.own_children = lambda: {pid for o in opts.observers for pid in o.children()}
    interrupts = 0

    def exited() -> bool:
        # WNOWAIT: leave the zombie in place so the last sample still reads
        # its final CPU totals; we reap it after the loop.
        res = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return res is not None and res.si_pid == proc.pid

    def on_signal(info: signal.struct_siginfo) -> bool:
        nonlocal interrupts
        sig = info.si_signo
        if sig == signal.SIGCHLD:
            return exited()
        if sig == signal.SIGUSR1:
            for o in opts.observers:
                o.on_demand()
            return False
        if sig in PASSED_ON:
            if info.si_code != SI_KERNEL:  # (from a terminal: the target got it too)
                _send(proc, sig)
            return False
        if sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            interrupts += 1
            if interrupts == 1:
                for o in opts.observers:
                    o.on_interrupt()  # e.g. a final py-spy dump, before forwarding
                # A terminal Ctrl-C already reached the target (same process
                # group); a kill aimed at circuit did not: forward it.
                if info.si_code != SI_KERNEL:
                    _send(proc, sig)
                _say(
                    opts,
                    f"{signal.Signals(sig).name}: waiting for the target to exit "
                    "(a second interrupt sends it SIGTERM, a third SIGKILL)",
                )
            elif interrupts == 2:
                _say(opts, "sending SIGTERM to the target")
                _send(proc, signal.SIGTERM)
            else:
                _say(opts, "sending SIGKILL to the target")
                _send(proc, signal.SIGKILL)
        return False

    waiter = _SignalWait(on_signal)
    next_check = 0

    def wait(timeout: float) -> bool:
        # The target's exit arrives as SIGCHLD (on_signal checks it); the
        # direct check is a safety net, at most ten times a second rather
        # than a system call every sample.
        nonlocal next_check
        if waiter(timeout):
            return True
        now = time.monotonic_ns()
        if now < next_check:
            return False
        next_check = now + EXIT_CHECK_NS
        return exited()

    stats = LoopStats()
    status: int | None = None
    write_error: OSError | None = None
    failed_s = 0.0
    on_tick, due = _start_observers(opts, writer, sampler)
    # Signals stay blocked until the run is finalised: a Ctrl-C pressed while
    # circuit merges the run must not cost the run (it is dropped instead).
    try:
        try:
            writer.write_meta()
            stats = run_loop(sampler, opts.rate, wait, on_tick, signals=tuple(SIGNALS), due=due)
        except OSError as e:
            # The disk filled or the folder became unwritable.  The target is
            # the user's work: it runs on, untraced, and we stay its parent so
            # Ctrl-C still reaches it and its exit status is still reported.
            write_error = e
            failed_s = (time.monotonic_ns() - meta["start_ns"]) / 1e9
            _say(
                opts,
                f"error: {_write_failure(writer, e)}; tracing stopped, waiting for the "
                "target to exit (Ctrl-C stops it)",
            )
        finally:
            # Whatever ended the loop, never block in waitpid while the target
            # still runs: Ctrl-C must keep reaching it.
            while not exited():
                if wait(0.5):
                    break
            try:
                _, raw = os.waitpid(proc.pid, 0)
                status = proc.returncode = os.waitstatus_to_exitcode(raw)  # reaped: Popen knows
            except ChildProcessError:
                status = proc.returncode
        code = status if status is not None else 1
        exit_signal = -code if code < 0 else None
        shell_code = 128 - code if code < 0 else code
        reason = "interrupted" if interrupts else "target exited"
        if write_error is not None:
            _abandon(writer, sampler, opts, {"exit_code": code, "exit_status": shell_code})
            raise SessionError(
                f"{_write_failure(writer, write_error)}; tracing stopped "
                f"{failed_s:.1f} s in, "
                f"the target ran on and exited with status {shell_code}; "
                "what was flushed before stays readable"
            )
        meta = _finish(
            writer,
            sampler,
            stats,
            {
                "exit_code": code,
                "exit_signal": exit_signal,
                "exit_status": shell_code,
                "stop_reason": reason,
            },
            opts,
            reason,
        )
    finally:
        sampler.reap_adopted()
        _child_subreaper(False)
        _restore_signals(old_mask)
    return shell_code, meta


def _child_subreaper(on: bool) -> bool:
    """Make circuit a child subreaper (or stop): orphans of the target's tree
    are reparented to circuit instead of init, so the sampler can follow them.
    False where prctl cannot (not Linux)."""
    return prctl(PR_SET_CHILD_SUBREAPER, int(on))


def _write_failure(writer: RunWriter, e: OSError) -> str:
    why = os.strerror(e.errno) if e.errno else str(e)
    return f"could not write the run to {writer.path}: {why}"


def _abandon(writer: RunWriter, sampler: Sampler, opts: Options, extra: dict[str, Any]) -> None:
    """After a write failure: stop everything we started, note what we can."""
    sampler.close()
    _stop_observers(opts, "write failed")
    writer.meta.update(stop_reason="write failed", **extra)
    try:
        writer.write_meta()  # atomic: on a full disk the previous meta.json stays
    except OSError:
        pass


def _send(proc: subprocess.Popen, sig: int) -> None:
    # os.kill, not proc.send_signal: that polls first and would reap an
    # exited target behind the loop's back (waitid then fails with ECHILD).
    # The unreaped zombie keeps its PID from being reused.
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


# -------------------------------------------------------------- attach


def check_attachable(pid: int) -> None:
    if pid <= 0:
        raise SessionError(f"not a valid PID: {pid}")
    if not os.path.exists(f"/proc/{pid}") and sys.platform.startswith("linux"):
        raise SessionError(f"no process with PID {pid}")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise SessionError(f"no process with PID {pid}") from None
    except PermissionError:
        pass  # another user's: /proc tells us below what we may read
    if sys.platform.startswith("linux"):
        try:
            os.listdir(f"/proc/{pid}/fd")
        except PermissionError:
            owner = _owner(pid)
            raise SessionError(
                f"permission denied: PID {pid} belongs to {owner}; run circuit as that user, "
                "or as root (or with CAP_SYS_PTRACE) to trace it"
            ) from None
        except FileNotFoundError:
            raise SessionError(f"no process with PID {pid}") from None
        why = _not_traceable(pid)
        if why:
            raise SessionError(f"PID {pid} {why}: nothing to trace")


PF_KTHREAD = 0x00200000  # linux/sched.h: the task is a kernel thread


def _not_traceable(pid: int) -> str | None:
    """Why ``pid`` cannot be traced (itself, a zombie, a kernel thread), or None."""
    if pid == os.getpid():
        return "is circuit itself"
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None  # (gone meanwhile: the session says so)
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return "has exited (a zombie its parent has not reaped)"
    if int(fields[6]) & PF_KTHREAD:
        return "is a kernel thread"
    return None


def _owner(pid: int) -> str:
    try:
        import pwd

        uid = os.stat(f"/proc/{pid}").st_uid
        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except (OSError, KeyError):
        return "another user"


def attach(pid: int, opts: Options, stop_fd: int | None = None) -> dict[str, Any]:
    """Trace an existing process until it exits, ``duration`` ends, or Ctrl-C.

    ``stop_fd``: also stop when this fd becomes readable or hits EOF (the
    helper process behind ``circuit.trace()`` watches a pipe from its parent).
    """
    _check_rate(opts.rate)
    check_attachable(pid)
    backend = make_backend(opts.backend)
    old_mask = _block_signals_early()
    try:
        writer, meta = _open_run(opts, "attach" if stop_fd is None else "trace")
        command = backend.info(pid)["cmdline"]
        meta.update(
            root_pid=pid,
            backend=backend.name,
            command=redact_argv(command) if opts.redact else command,
        )
        if opts.record_env:
            env = _read_environ(pid)
            if env is None:
                meta["warnings"].append(
                    f"the environment of PID {pid} is not readable: not recorded"
                )
            else:
                meta["environment"] = redact_env(env)
        writer.write_meta()
        sampler = Sampler(
            backend,
            writer,
            pid,
            exclude={os.getpid()},
            fds=opts.fds,
            redact=redact_argv if opts.redact else None,
        )
    except BaseException:
        _restore_signals(old_mask)
        raise
    end = time.monotonic() + opts.duration if opts.duration else None
    reason = "target exited"

    def on_signal(info: signal.struct_siginfo) -> bool:
        nonlocal reason
        if info.si_signo == signal.SIGUSR1:
            for o in opts.observers:
                o.on_demand()
            return False
        if info.si_signo in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            reason = f"stopped by {signal.Signals(info.si_signo).name}"
            return True
        return False

    waiter = _SignalWait(on_signal)

    def wait(timeout: float) -> bool:
        nonlocal reason
        if end is not None:
            left = end - time.monotonic()
            if left <= 0:
                reason = "duration reached"
                return True
            timeout = min(timeout, left)
        if stop_fd is not None:
            import select

            r, _, _ = select.select([stop_fd], [], [], 0)
            if r:
                reason = "trace() block ended"
                return True
        return waiter(timeout)

    on_tick, due = _start_observers(opts, writer, sampler)
    try:
        stats = run_loop(
            sampler,
            opts.rate,
            wait,
            on_tick,
            signals=tuple(SIGNALS),
            watch_fd=-1 if stop_fd is None else stop_fd,
            until_ns=None if end is None else round(end * 1e9),
            due=due,
        )
    except OSError as e:
        # Disk full or folder unwritable: the target is not ours to stop.
        _abandon(writer, sampler, opts, {})
        raise SessionError(
            f"{_write_failure(writer, e)}; tracing stopped, PID {pid} was left running; "
            "what was flushed before stays readable"
        ) from None
    else:
        return _finish(
            writer, sampler, stats, {"stop_reason": reason, "exit_code": None}, opts, reason
        )
    finally:
        _restore_signals(old_mask)


def _read_environ(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.decode("utf-8", "backslashreplace").partition("=")
        if sep:
            env[k] = v
    return env


def describe(meta: dict[str, Any]) -> str:
    cmd = shlex.join(meta.get("command") or [])
    return (
        f"{meta.get('samples', 0)} samples at {meta.get('rate_hz_achieved', 0):.1f} Hz "
        f"over {meta.get('wall_s', 0):.2f} s of `{cmd}`; sampler CPU "
        f"{meta.get('sampler_cpu_s', 0):.3f} s"
    )
