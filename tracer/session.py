"""A tracing session: start or find the target, sample it, finalise the run.

:class:`Session` is the lifecycle, written once: check the options, make the
backend, block the signals (tracer/signals.py), open the run folder, start
or find the target, build the sampler, start the observers, sample until
the target says stop, then finalise the run (or, if it could not be
written, abandon it).  What differs between a command circuit starts and a
process that already runs is the :class:`~circuit.tracer.targets.Target`
(tracer/targets.py).  ``run_command`` and ``attach`` are the entry points.
"""

from __future__ import annotations

import getpass
import os
import platform
import shlex
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from . import merge, signals
from .backends import Backend, make_backend
from .exits import ExitListener, exits_end_meta, exits_meta
from .loop import LoopStats, run_loop
from .options import Options, SessionError
from .redact import redact_argv
from .sampler import Sampler
from .schema import FORMAT_VERSION
from .targets import Attached, Spawned, Target, check_attachable
from .writer import RunWriter, prepare_run_dir

__all__ = [
    "Options",
    "Session",
    "SessionError",
    "attach",
    "base_meta",
    "check_attachable",
    "describe",
    "run_command",
]


def run_command(cmd: list[str], opts: Options) -> tuple[int, dict[str, Any]]:
    """Start ``cmd``, trace it until it exits; return (exit status, meta)."""
    target = Spawned(cmd, opts)
    meta = Session(target).run()
    return target.shell_code, meta


def attach(pid: int, opts: Options, stop_fd: int | None = None) -> dict[str, Any]:
    """Trace an existing process until it exits, ``duration`` ends, or Ctrl-C.

    ``stop_fd``: also stop when this fd becomes readable or hits EOF (the
    helper process behind ``circuit.trace()`` watches a pipe from its parent).
    """
    return Session(Attached(pid, opts, stop_fd)).run()


class Session:
    """One tracing session of ``target``, with its options."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.opts = target.opts

    def run(self) -> dict[str, Any]:
        """Trace the target to the end; return the finalised run's meta."""
        opts, target = self.opts, self.target
        _check_rate(opts.rate)
        target.check()
        backend = make_backend(opts.backend)
        old_mask = signals.block_early()
        sampler: Sampler | None = None
        try:
            try:
                writer = _open_run(opts, target.mode)
                sampler = self._start(writer, backend, old_mask)
            except OSError as e:
                raise target.start_failed(e) from None
            target.configure(sampler)
            return self._trace(writer, sampler)
        finally:
            target.release(sampler)
            signals.restore(old_mask)

    def _start(self, writer: RunWriter, backend: Backend, old_mask: set[int]) -> Sampler:
        opts, meta = self.opts, writer.meta
        meta["backend"] = backend.name
        # Listen before the target starts: a thread or child it ends in its
        # first milliseconds, before the first sample, still has its record.
        exits = ExitListener.open() if opts.exits else "off (asked)"
        try:
            self.target.start(writer, backend, old_mask)
        except BaseException:
            if isinstance(exits, ExitListener):
                exits.close()
            raise
        # The run starts when the target is there (for `run`: once spawned).
        meta.update(start_ns=time.monotonic_ns(), start_time=_now_iso())
        meta["exits"] = exits_meta(exits)
        sampler = Sampler(
            backend,
            writer,
            self.target.pid,
            exclude={os.getpid()},
            fds=opts.fds,
            redact=redact_argv if opts.redact else None,
        )
        sampler.exits = exits if isinstance(exits, ExitListener) else None
        return sampler

    def _trace(self, writer: RunWriter, sampler: Sampler) -> dict[str, Any]:
        opts, target = self.opts, self.target
        on_tick, due = _start_observers(opts, writer, sampler)
        stats = LoopStats()
        failed: OSError | None = None
        failed_s = 0.0
        # Signals stay blocked until the run is finalised: a Ctrl-C pressed
        # while circuit merges the run must not cost the run (it is dropped
        # instead).
        try:
            writer.write_meta()
            stats = run_loop(
                sampler,
                opts.rate,
                target.wait,
                on_tick,
                signals=tuple(signals.SIGNALS),
                watch_fd=target.watch_fd,
                until_ns=target.until_ns,
                due=due,
            )
        except OSError as e:  # the disk filled, or the folder became unwritable
            failed = e
            failed_s = (time.monotonic_ns() - writer.meta["start_ns"]) / 1e9
            target.write_failed(_write_failure(writer, e))
        finally:
            target.stop()
        if failed is not None:
            _abandon(writer, sampler, opts, target.abandon_meta())
            raise SessionError(
                f"{_write_failure(writer, failed)}; {target.left(failed_s)}; "
                "what was flushed before stays readable"
            )
        return _finish(writer, sampler, stats, target.end_meta(), opts, target.reason)


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
        "loop_threshold_s": opts.loop_threshold,
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


def _open_run(opts: Options, mode: str) -> RunWriter:
    try:
        path = prepare_run_dir(opts.out, opts.force)
    except FileExistsError as e:
        raise SessionError(str(e)) from None
    except PermissionError:
        raise SessionError(f"output folder {opts.out} is not writable") from None
    except OSError as e:
        raise SessionError(f"cannot create output folder {opts.out}: {e.strerror}") from None
    return RunWriter(path, base_meta(mode, opts))


def _start_observers(
    opts: Options, writer: RunWriter, sampler: Sampler
) -> tuple[Callable[[int], None], Callable[[], int | None]]:
    """Start the observers; return the loop's per-tick callback, and when
    the observers next need it (run_loop's ``due``)."""
    for o in opts.observers:
        o.start(writer.path, sampler.root_pid)
        o.watch_threads(writer.tick_buffers().thread_batches)
        o.watch_sink(writer.tick_buffers(), writer.taps)
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


# A cause the warning names: fd scans that took this share of the sampler's
# CPU, this many threads read per sample, a load average of this per core.
BEHIND_FD_SHARE = 0.3
BEHIND_THREADS = 200
BEHIND_LOAD_PER_CORE = 1.0


def _behind(
    stats: LoopStats,
    rate: float,
    threads_per_sample: float = 0.0,
    load: float | None = None,
    cores: int = 1,
) -> str | None:
    """A warning if the loop held much less than the requested rate (over
    enough samples to tell): time per state is then coarser than asked.  It
    names the causes it measured (the fd scans' share of the sampler's CPU,
    threads per sample, the 1-minute load average) and what would help."""
    if stats.samples < 20 or stats.achieved_hz >= BEHIND_SHARE * rate:
        return None
    wall = (stats.last_ns - stats.first_ns) / 1e9
    causes = []
    if stats.cpu_s > 0 and stats.fd_scan_cpu_s >= BEHIND_FD_SHARE * stats.cpu_s:
        causes.append(
            f"fd scans took {stats.fd_scan_cpu_s / stats.cpu_s:.0%} of its "
            f"{stats.cpu_s:.2f} s of CPU (--no-fds skips them)"
        )
    if threads_per_sample >= BEHIND_THREADS:
        causes.append(f"it read {threads_per_sample:.0f} threads per sample (a lower --rate)")
    if load is not None and load >= BEHIND_LOAD_PER_CORE * cores:
        causes.append(
            f"the machine was busy: load average {load:.1f} on {cores} cores (a lower --rate)"
        )
    if not causes:
        share = stats.cpu_s / wall if wall > 0 else 0.0
        causes.append(
            f"no single cause stood out (sampler CPU {share:.0%} of a core; a lower --rate)"
        )
    return (
        f"the sampler kept {stats.achieved_hz:.1f} of the {rate:g} Hz asked "
        f"({stats.missed} deadlines missed): " + "; ".join(causes) + " (docs/performance.md)"
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
    per_sample = sampler.thread_samples / sampler.samples if sampler.samples else 0.0
    behind = _behind(stats, opts.rate, per_sample, os.getloadavg()[0], os.cpu_count() or 1)
    if behind:
        warnings.append(behind)
        opts.say(f"warning: {behind}")
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
        "fd_scans": sampler.fd_scans,
        "fd_scan_cpu_s": round(sampler.fd_scan_ns / 1e9, 6),
        "gil_sources": {str(pid): src for pid, src in sorted(sampler.gil_sources.items())},
        "exits": exits_end_meta(meta.get("exits", {}), sampler),
        "warnings": warnings,
        **extra,
    }
    if sampler.thread_samples > merge.MERGE_ROWS:
        # ~1 s per million rows, read twice and sorted in buckets (tracer/merge.py)
        opts.say(f"sorting {sampler.thread_samples:,} thread-samples into {writer.path}")
    try:
        writer.finalize(updates)
    except OSError as e:
        raise SessionError(
            f"could not finish writing the run in {writer.path}: {e.strerror}; "
            "what was flushed before stays readable"
        ) from None
    return writer.meta


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


def describe(meta: dict[str, Any]) -> str:
    cmd = shlex.join(meta.get("command") or [])
    code = meta.get("exit_code")
    name = signals.signal_name(code)
    ended = f"; killed by {name}" if name else "" if code is None else f"; exit {code}"
    return (
        f"{meta.get('samples', 0)} samples at {meta.get('rate_hz_achieved', 0):.1f} Hz "
        f"over {meta.get('wall_s', 0):.2f} s of `{cmd}`{ended}; sampler CPU "
        f"{meta.get('sampler_cpu_s', 0):.3f} s"
    )
