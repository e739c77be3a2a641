"""``circuit.trace()``: trace the current process from a helper process.

The helper (``python -m circuit.tracer.agent``) attaches to our PID and samples
from outside; it stops when the pipe we hold on its stdin closes, which also
happens if this process dies, so a crashed script still leaves a finished run.
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
    ) -> None:
        self.path = Path(path)
        self.rate = rate
        self.backend = backend
        self.force = force
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
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # handshake: the first sample is taken
        if line.strip() != b"ready":
            err = self._proc.communicate()[1].decode(errors="replace").strip()
            raise CircuitError(err.splitlines()[-1] if err else "the tracing helper failed")
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
        if self._proc.returncode != 0:
            msg = err.decode(errors="replace").strip()
            raise CircuitError(msg.splitlines()[-1] if msg else "the tracing helper failed")
        import json

        self.meta = json.loads((self.path / "meta.json").read_text())

    def load(self) -> Any:
        from circuit import load

        return load(self.path)
