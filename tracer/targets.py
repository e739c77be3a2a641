"""The two things a session can trace: a command it starts, a process that runs.

A :class:`Target` holds what differs between them: how the process is found
or started and described in meta.json, what each signal means, when the
loop stops, what happens to the process after the loop, and what the run
records of its end.  :class:`circuit.tracer.session.Session` does the rest,
the same for both.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from typing import Any

from circuit.marks import ENV_RUN_DIR

from . import signals
from .backends import Backend
from .options import Options, SessionError
from .prctl import PR_SET_CHILD_SUBREAPER, prctl
from .redact import redact_argv, redact_env
from .sampler import Sampler
from .writer import RunWriter

# How often, at most, the sampling loop also asks waitid() whether the
# target exited, when Python runs (it normally learns it from SIGCHLD, which
# also ends a C burst at once).
EXIT_CHECK_NS = 100_000_000


class Target(ABC):
    """What a session traces; the hooks are called in this order: check,
    start, configure, (wait, on_signal)*, [write_failed], stop, then
    end_meta or abandon_meta + left, and release (always)."""

    mode: str  # meta.json's "mode"
    watch_fd = -1  # the loop also stops when this fd becomes readable
    until_ns: int | None = None  # ... or at this time.monotonic_ns()
    reason = "target exited"  # meta.json's "stop_reason"

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.waiter = signals.SignalWait(self.on_signal)

    @property
    @abstractmethod
    def pid(self) -> int:
        """The root process (known once ``start`` returned)."""

    def check(self) -> None:  # noqa: B027 (optional hook)
        """Refuse (SessionError) before anything is created."""

    @abstractmethod
    def start(self, writer: RunWriter, backend: Backend, old_mask: set[int]) -> None:
        """Describe the target in ``writer.meta``; start it or find it."""

    def start_failed(self, e: OSError) -> Exception:
        """The error to raise when ``start`` (or opening the run) failed."""
        return e

    def configure(self, sampler: Sampler) -> None:  # noqa: B027 (optional hook)
        """Set up the sampler before the first sample."""

    @abstractmethod
    def on_signal(self, info: signal.struct_siginfo) -> bool:
        """React to a signal; True: stop the loop."""

    def wait(self, timeout: float) -> bool:
        """The loop's sleep until its next sample; True: stop."""
        return self.waiter(timeout)

    def write_failed(self, why: str) -> None:  # noqa: B027 (optional hook)
        """The loop stopped: the run could not be written (``why``)."""

    def stop(self) -> None:  # noqa: B027 (optional hook)
        """After the loop, however it ended."""

    @abstractmethod
    def end_meta(self) -> dict[str, Any]:
        """What meta.json records of the target's end."""

    def abandon_meta(self) -> dict[str, Any]:
        """What meta.json records of it after a write failure."""
        return {}

    @abstractmethod
    def left(self, failed_s: float) -> str:
        """After a write failure ``failed_s`` into the run: how tracing
        stopped and what became of the target."""

    def release(self, sampler: Sampler | None) -> None:  # noqa: B027 (optional hook)
        """Undo what ``start`` and ``configure`` set up (``sampler``: None if not built)."""


# ------------------------------------------------------------------ run


class Spawned(Target):
    """A command circuit starts, traces until it exits, and reaps.

    Ctrl-C at a terminal reaches the target too (same process group); a
    signal aimed at circuit alone is forwarded.  A second interrupt sends the
    target SIGTERM, a third SIGKILL.
    """

    mode = "run"

    def __init__(self, cmd: list[str], opts: Options) -> None:
        super().__init__(opts)
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None
        self.adopting = False
        self.interrupts = 0
        self.status: int | None = None
        self.next_check = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check(self) -> None:
        cmd = self.cmd
        if not cmd:
            raise SessionError("no command given: circuit run [options] -- CMD ARGS...")
        if shutil.which(cmd[0]) is None:
            if os.path.sep in cmd[0] and os.path.isdir(cmd[0]):
                raise SessionError(f"cannot run {cmd[0]}: it is a directory")
            if os.path.sep in cmd[0] and os.path.exists(cmd[0]):
                raise SessionError(f"permission denied: {cmd[0]} is not executable")
            raise SessionError(f"command not found: {cmd[0]}")

    def start(self, writer: RunWriter, backend: Backend, old_mask: set[int]) -> None:
        opts, meta = self.opts, writer.meta
        meta["command"] = redact_argv(self.cmd) if opts.redact else self.cmd
        env = dict(os.environ)
        env[ENV_RUN_DIR] = str(writer.path.resolve())
        if opts.record_env:
            meta["environment"] = redact_env(env)
        writer.write_meta()
        self.adopting = _child_subreaper(True)
        self.proc = subprocess.Popen(
            self.cmd,
            env=env,
            # The child must not inherit our blocked mask.
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old_mask),
        )
        meta["root_pid"] = self.proc.pid

    def start_failed(self, e: OSError) -> Exception:
        return SessionError(f"cannot start {self.cmd[0]}: {e.strerror}")

    def configure(self, sampler: Sampler) -> None:
        sampler.keep_zombie_root = True
        if self.adopting:
            observers = self.opts.observers
            sampler.adopter = os.getpid()
            sampler.own_children = lambda: {pid for o in observers for pid in o.children()}

    def exited(self) -> bool:
        # WNOWAIT: leave the zombie in place so the last sample still reads
        # its final CPU totals; stop() reaps it after the loop.
        res = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return res is not None and res.si_pid == self.pid

    def on_signal(self, info: signal.struct_siginfo) -> bool:
        sig = info.si_signo
        if sig == signal.SIGCHLD:
            return self.exited()
        if sig == signal.SIGUSR1:
            for o in self.opts.observers:
                o.on_demand()
            return False
        if sig in signals.PASSED_ON:
            if info.si_code != signals.SI_KERNEL:  # (from a terminal: the target got it too)
                self.send(sig)
            return False
        if sig in signals.STOPS:
            self.interrupts += 1
            self.reason = "interrupted"
            if self.interrupts == 1:
                for o in self.opts.observers:
                    o.on_interrupt()  # e.g. a final py-spy dump, before forwarding
                # A terminal Ctrl-C already reached the target (same process
                # group); a kill aimed at circuit did not: forward it.
                if info.si_code != signals.SI_KERNEL:
                    self.send(sig)
                self.opts.say(
                    f"{signal.Signals(sig).name}: waiting for the target to exit "
                    "(a second interrupt sends it SIGTERM, a third SIGKILL)"
                )
            elif self.interrupts == 2:
                self.opts.say("sending SIGTERM to the target")
                self.send(signal.SIGTERM)
            else:
                self.opts.say("sending SIGKILL to the target")
                self.send(signal.SIGKILL)
        return False

    def wait(self, timeout: float) -> bool:
        # The target's exit arrives as SIGCHLD (on_signal checks it); the
        # direct check is a safety net, at most ten times a second rather
        # than a system call every sample.
        if self.waiter(timeout):
            return True
        now = time.monotonic_ns()
        if now < self.next_check:
            return False
        self.next_check = now + EXIT_CHECK_NS
        return self.exited()

    def write_failed(self, why: str) -> None:
        # The disk filled or the folder became unwritable.  The target is
        # the user's work: it runs on, untraced, and we stay its parent so
        # Ctrl-C still reaches it and its exit status is still reported.
        self.opts.say(
            f"error: {why}; tracing stopped, waiting for the target to exit (Ctrl-C stops it)"
        )

    def stop(self) -> None:
        # Whatever ended the loop, never block in waitpid while the target
        # still runs: Ctrl-C must keep reaching it.
        assert self.proc is not None
        while not self.exited():
            if self.wait(0.5):
                break
        try:
            _, raw = os.waitpid(self.pid, 0)
            self.status = self.proc.returncode = os.waitstatus_to_exitcode(raw)  # Popen knows
        except ChildProcessError:
            self.status = self.proc.returncode

    @property
    def exit_code(self) -> int:
        return self.status if self.status is not None else 1

    @property
    def shell_code(self) -> int:
        """The exit status a shell reports: 128 + N after signal N."""
        code = self.exit_code
        return 128 - code if code < 0 else code

    def end_meta(self) -> dict[str, Any]:
        code = self.exit_code
        return {
            "exit_code": code,
            "exit_signal": -code if code < 0 else None,
            "exit_signal_name": signals.signal_name(code),
            "exit_status": self.shell_code,
            "stop_reason": self.reason,
        }

    def abandon_meta(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "exit_status": self.shell_code}

    def left(self, failed_s: float) -> str:
        return (
            f"tracing stopped {failed_s:.1f} s in, "
            f"the target ran on and exited with status {self.shell_code}"
        )

    def release(self, sampler: Sampler | None) -> None:
        if sampler is not None:
            sampler.reap_adopted()
        _child_subreaper(False)

    def send(self, sig: int) -> None:
        # os.kill, not proc.send_signal: that polls first and would reap an
        # exited target behind the loop's back (waitid then fails with ECHILD).
        # The unreaped zombie keeps its PID from being reused.
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


def _child_subreaper(on: bool) -> bool:
    """Make circuit a child subreaper (or stop): orphans of the target's tree
    are reparented to circuit instead of init, so the sampler can follow them.
    False where prctl cannot (not Linux)."""
    return prctl(PR_SET_CHILD_SUBREAPER, int(on))


# --------------------------------------------------------------- attach


class Attached(Target):
    """A process that already runs: traced until it exits, ``duration``
    ends, a stop signal, or ``stop_fd`` becomes readable or hits EOF (the
    helper process behind ``circuit.trace()`` watches a pipe from its
    parent).  It is never signalled, and left running."""

    def __init__(self, pid: int, opts: Options, stop_fd: int | None = None) -> None:
        super().__init__(opts)
        self._pid = pid
        self.stop_fd = stop_fd
        self.mode = "attach" if stop_fd is None else "trace"
        self.watch_fd = -1 if stop_fd is None else stop_fd
        self.end: float | None = None

    @property
    def pid(self) -> int:
        return self._pid

    def check(self) -> None:
        check_attachable(self._pid)

    def start(self, writer: RunWriter, backend: Backend, old_mask: set[int]) -> None:
        opts, meta, pid = self.opts, writer.meta, self._pid
        command = backend.info(pid)["cmdline"]
        meta.update(root_pid=pid, command=redact_argv(command) if opts.redact else command)
        if opts.record_env:
            env = _read_environ(pid)
            if env is None:
                meta["warnings"].append(
                    f"the environment of PID {pid} is not readable: not recorded"
                )
            else:
                meta["environment"] = redact_env(env)
        if opts.duration:
            self.end = time.monotonic() + opts.duration
            self.until_ns = round(self.end * 1e9)

    def on_signal(self, info: signal.struct_siginfo) -> bool:
        if info.si_signo == signal.SIGUSR1:
            for o in self.opts.observers:
                o.on_demand()
            return False
        if info.si_signo in signals.STOPS:
            self.reason = f"stopped by {signal.Signals(info.si_signo).name}"
            return True
        return False

    def wait(self, timeout: float) -> bool:
        if self.end is not None:
            left = self.end - time.monotonic()
            if left <= 0:
                self.reason = "duration reached"
                return True
            timeout = min(timeout, left)
        if self.stop_fd is not None:
            r, _, _ = select.select([self.stop_fd], [], [], 0)
            if r:
                self.reason = "trace() block ended"
                return True
        return self.waiter(timeout)

    def end_meta(self) -> dict[str, Any]:
        return {"stop_reason": self.reason, "exit_code": None}

    def left(self, failed_s: float) -> str:
        # Disk full or folder unwritable: the target is not ours to stop.
        return f"tracing stopped, PID {self._pid} was left running"


def check_attachable(pid: int) -> None:
    """Raise SessionError when ``pid`` cannot be traced, saying why."""
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
