"""py-spy's surroundings: finding it, telling Python processes, reading its
failures, its JSON, and asking a running tracer for a dump."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from circuit.marks import ENV_RUN_DIR

from .procfs import is_python_image
from .schema import PYSPY_DIR

PID_FILE = "tracer.pid"
ENV_PYSPY = "CIRCUIT_PYSPY"  # path of the py-spy executable to use (tests point it at fakes)


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


def thread_record(t: dict[str, Any]) -> dict[str, Any]:
    """One thread of ``py-spy dump --json``, as dumps.jsonl stores it (docs/pyspy.md)."""
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


def written_ns(out: Path, started_ns: int) -> int:
    """When py-spy wrote ``out`` (it writes once it has read the stacks), on
    CLOCK_MONOTONIC: its mtime, taken from the coarse realtime clock (up to
    one tick early, so one tick is added), moved to the monotonic clock and
    kept between the dump's start and now."""
    now = time.monotonic_ns()
    try:
        mtime = os.stat(out).st_mtime_ns
    except OSError:
        return now
    offset = time.time_ns() - time.monotonic_ns()
    return max(started_ns, min(now, mtime - offset + _COARSE_NS))


_COARSE_NS = round(time.clock_getres(getattr(time, "CLOCK_REALTIME_COARSE", 5)) * 1e9)


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (created owner-only).

    Opened per dump (about one a second), never held open: a held writable
    file would keep the folder's filesystem from being remounted read-only,
    and a kill leaves whole lines behind.  Owner only: stacks name files and
    functions.
    """
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def unlink_quietly(*paths: Path) -> None:
    for f in paths:
        try:
            f.unlink()
        except OSError:
            pass


def unnamed(threads: list[Any]) -> bool:
    """Whether a dump's threads lack their OS thread ids (py-spy reading a
    running Python 3.10 or older without stopping it)."""
    return any(isinstance(t, dict) and t.get("os_thread_id") is None for t in threads)
