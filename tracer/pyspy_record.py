"""``py-spy record`` beside a run: a flame graph and a speedscope profile.

Two recorders follow the traced root process and its children for the whole
run (``--subprocesses``), one per output format, and write into the run's
``pyspy/`` folder when asked to stop (SIGINT).  Their failures are reported
through the observer's ``fail`` callback and never stop the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schema import PYSPY_DIR

# (py-spy --format, file written in the run's pyspy/ folder)
FORMATS = (("flamegraph", "profile.svg"), ("speedscope", "profile.speedscope.json"))
# py-spy record writes its output after SIGINT; past its dump timeout plus
# this, it is killed.
STOP_GRACE_S = 10


def private_file(path: Path) -> Any:
    """``path`` opened for binary writing, owner only: stacks name files and functions."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


@dataclass
class Profiles:
    exe: str
    out_dir: Path  # the run's pyspy/ folder
    fail: Callable[[str, str], None]  # (kind, message), as PySpyObserver._fail
    gil: bool = False
    idle: bool = False
    native: bool = False
    timeout: float = 5.0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, pid: int) -> None:
        """Start one recorder per format on ``pid`` (a Python process) and its children."""
        for fmt, name in FORMATS:
            args = [
                self.exe,
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--format",
                fmt,
                "-o",
                str(self.out_dir / name),
            ]
            args += [f"--{o}" for o in ("gil", "idle", "native") if getattr(self, o)]
            if not self.native:
                args.append("--nonblocking")
            try:
                with private_file(self.out_dir / f"{name}.log") as log:
                    self.procs.append(
                        subprocess.Popen(
                            args,
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=log,
                            start_new_session=True,
                        )
                    )
            except OSError as e:
                self.fail("exec", f"cannot run py-spy record: {e.strerror}")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> list[str]:
        """Stop the recorders; the profiles written, as paths in the run folder."""
        done = []
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                p.wait(self.timeout + STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self.fail("timeout", "py-spy record did not stop in time and was killed")
        for _, name in FORMATS:
            if (self.out_dir / name).exists():
                os.chmod(self.out_dir / name, 0o600)
                done.append(f"{PYSPY_DIR}/{name}")
                log = self.out_dir / f"{name}.log"
                if log.exists() and log.stat().st_size == 0:
                    log.unlink()
        if self.procs and not done:
            self.fail("profile", "py-spy record wrote no profile (see pyspy/*.log)")
        return done
