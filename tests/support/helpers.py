"""Test helpers in the spirit of psutil's: spawn real children, wait for a
ready handshake, always clean up; trace a snippet with the real tracer."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PY = sys.executable  # the venv's real interpreter (python3 here may be a shell shim)
CIRCUIT = [PY, "-m", "circuit"]
TARGETS = Path(__file__).resolve().parent.parent / "targets"  # scripts the tests run


def interpreter(minor: int) -> str:
    """A CPython 3.minor with the default GIL (pyenv's, this venv's or on PATH), or skip."""
    import glob
    import shutil

    import pytest

    found = sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}"))
    )
    if sys.version_info[:2] == (3, minor):
        found.append(sys.executable)
    exe = found[0] if found else shutil.which(f"python3.{minor}")
    if not exe:
        pytest.skip(f"no CPython 3.{minor} on this machine")
    return exe


def code(src: str) -> str:
    return textwrap.dedent(src).strip() + "\n"


def trace(tmp_path: Path, src: str, name: str = "run", **opts: Any) -> tuple[int, Any]:
    """Trace ``python -c src`` in-process with the real tracer; return (exit, Run)."""
    return trace_argv([PY, "-c", code(src)], tmp_path / name, **opts)


def trace_argv(argv: list[str], out: Path, **opts: Any) -> tuple[int, Any]:
    """Trace the command ``argv`` into ``out`` in-process; return (exit, Run)."""
    import circuit
    from circuit.tracer.session import Options, run_command

    status, _meta = run_command(argv, Options(out=out, quiet=True, **opts))
    return status, circuit.load(out)


def cli(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CIRCUIT, *args], capture_output=True, text=True, timeout=timeout, **kw)


class Spawned:
    """A Python child that prints ``ready`` once set up; killed on exit."""

    def __init__(self, src: str, **kw: Any) -> None:
        self.proc = subprocess.Popen([PY, "-c", code(src)], stdout=subprocess.PIPE, text=True, **kw)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"child did not get ready: {line!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def __enter__(self) -> Spawned:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def thread_summary(run, **match: Any) -> list[dict[str, Any]]:
    """Summary entries of the threads matching all ``match`` items."""
    return [t for t in run.summary()["threads"] if all(t[k] == v for k, v in match.items())]


def share(t: dict[str, Any], reason: str) -> float:
    total = sum(t["time_by_wait"].values())
    return t["time_by_wait"].get(reason, 0.0) / total if total else 0.0


def wait_for(pred, timeout: float = 10.0, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return False


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] != b"Z"


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def flushed_batches(run_dir: Path, table: str) -> int:
    """Whole record batches flushed so far into ``<table>.parts/*.arrows`` of a
    run being written (one per flush that had rows for the table)."""
    import pyarrow as pa

    from circuit.tracer.parts import STREAM_SUFFIX, part_files, read_stream

    n = 0
    for f in part_files(Path(run_dir) / f"{table}.parts"):
        if f.suffix != STREAM_SUFFIX:
            continue
        try:
            _, batches, _ = read_stream(pa, f)
        except FileNotFoundError:
            continue  # merged into <table>.parquet meanwhile
        n += len(batches)
    return n


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` mounted at ``path``, to fill up (needs root)."""
    import pytest

    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
