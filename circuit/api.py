"""``circuit.trace()``: trace the current process from a helper process;
``circuit.compare()``: runs side by side.

The helper (``python -m circuit.tracer.agent``) attaches to our PID and samples
from outside; it stops when the pipe we hold on its stdin closes, which also
happens if this process dies, so a crashed script still leaves a finished run.
Like ``circuit attach`` it takes py-spy dumps of us (``pyspy=False``: none).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import CircuitError
from .marks import ENV_RUN_DIR


class Trace:
    def __init__(
        self,
        path: str | os.PathLike[str],
        rate: float = 100.0,
        backend: str = "auto",
        force: bool = False,
        pyspy: bool = True,
        dump_interval: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.rate = rate
        self.backend = backend
        self.force = force
        self.pyspy = pyspy
        self.dump_interval = dump_interval  # None: auto, as `circuit run --dump-interval`
        self.meta: dict[str, Any] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._old_env: str | None = None

    def __enter__(self) -> Trace:
        cmd = [
            sys.executable,
            "-m",
            "circuit.tracer.agent",
            "--pid",
            str(os.getpid()),
            "-o",
            str(self.path),
            "--rate",
            str(self.rate),
            "--backend",
            self.backend,
        ]
        if self.force:
            cmd.append("--force")
        if not self.pyspy:
            cmd.append("--no-pyspy")
        elif self.dump_interval is not None:
            cmd += ["--dump-interval", f"{self.dump_interval:g}"]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own session: a Ctrl-C at the terminal is for this script
            # (which may catch it and go on); the helper stops on our pipe.
            start_new_session=True,
        )
        if self.pyspy:
            _set_ptracer(self._proc.pid)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # handshake: the first sample is taken
        if line.strip() != b"ready":
            if self.pyspy:
                _set_ptracer(0)
            raise CircuitError(_helper_error(self._proc.communicate()[1]))
        self._old_env = os.environ.get(ENV_RUN_DIR)
        os.environ[ENV_RUN_DIR] = str(self.path.resolve())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._old_env is None:
            os.environ.pop(ENV_RUN_DIR, None)
        else:
            os.environ[ENV_RUN_DIR] = self._old_env
        assert self._proc is not None
        _, err = self._proc.communicate()  # closes stdin: the helper finalises
        if self.pyspy:
            _set_ptracer(0)
        if self._proc.returncode != 0:
            msg = _helper_error(err)
            if exc_type is not None:
                # Never mask what the block raised (a KeyboardInterrupt, say).
                print(f"circuit: {msg}", file=sys.stderr)
                return
            raise CircuitError(msg)
        import json

        self.meta = json.loads((self.path / "meta.json").read_text())

    def load(self) -> Any:
        from circuit import load

        return load(self.path)


def _set_ptracer(pid: int) -> None:
    """Let ``pid`` (the helper) and its children (py-spy) read this process
    where Yama allows ptrace of descendants only (``ptrace_scope`` 1, the
    default of Ubuntu and others): the helper is our child, not our parent.
    0 takes that back.  Elsewhere, or without Yama, prctl fails: no matter."""
    from .tracer.prctl import PR_SET_PTRACER, prctl

    prctl(PR_SET_PTRACER, pid)


def _helper_error(err: bytes) -> str:
    """The helper's last stderr line, said as the API's (force=, not --force)."""
    lines = err.decode(errors="replace").strip().splitlines()
    msg = lines[-1] if lines else "the tracing helper failed"
    return msg.removeprefix("circuit: error: ").replace("use --force", "use force=True")


def compare(runs: Any, labels: Any = None) -> Any:
    """The comparison table of some runs (paths or :class:`Run` objects).

    Columns: ``group, metric, label, unit, compared``, one column of values
    per run and one ``"<label> vs <first>"`` per later run (a ratio or a
    difference, as ``compared`` says); NaN where a figure does not apply or
    was not recorded (``df.attrs["not_recorded"]``: per run, the groups its
    summary has no key for).  Bench folders: one block per matched cell.
    """
    from .analysis.compare_load import compare_paths, to_frame

    if isinstance(runs, (str, os.PathLike)):
        raise CircuitError("compare takes a list of runs, e.g. circuit.compare([a, b])")
    paths = [Path(getattr(r, "path", r)) for r in runs]
    if labels is not None and not isinstance(labels, str):
        labels = ",".join(str(x) for x in labels)
    cmp = compare_paths(paths, labels)
    df = to_frame(cmp)
    if cmp["kind"] == "runs":
        df.attrs["not_recorded"] = cmp["not_recorded"]
    return df
