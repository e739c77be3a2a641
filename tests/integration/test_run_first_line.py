"""`circuit run` on a terminal names its own PID first (for kill -USR1)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.helpers import CIRCUIT, PY

pytestmark = pytest.mark.integration


def test_the_first_line_on_a_terminal_names_circuits_pid(tmp_path: Path) -> None:
    main, sub = pty.openpty()
    cmd = [*CIRCUIT, "run", "--no-pyspy", "-o", str(tmp_path / "r"), "--", PY, "-c", "pass"]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sub, stderr=sub)
    os.close(sub)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the pty's other end closed
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(timeout=60) == 0
    os.close(main)
    first = out.decode(errors="replace").splitlines()[0]
    m = re.match(r"circuit: PID (\d+) traces ", first)
    assert m, first
    assert int(m.group(1)) == p.pid
    assert f"kill -USR1 {p.pid}" in first


def test_no_first_line_when_piped(tmp_path: Path) -> None:
    cmd = [*CIRCUIT, "run", "--no-pyspy", "-o", str(tmp_path / "r"), "--", PY, "-c", "pass"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "traces" not in r.stderr.splitlines()[0], r.stderr
