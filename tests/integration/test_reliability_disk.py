"""The output disk fills up or turns read-only in the middle of a run.

Policy (docs/reliability.md): circuit stops tracing with a one-line error,
the target runs on untraced while circuit stays its parent (Ctrl-C still
reaches it, its exit status is still reported), then circuit exits 2; the
parts flushed before the failure stay loadable.

A real small tmpfs stands in for the full disk (root ignores chmod, so a
permission trick would not be honest); the tests skip where mount fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

import circuit
from tests.support.helpers import CIRCUIT, PY, code, flushed_batches, kill_quietly, tmpfs, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "2M") as d:
        yield d


# Waits for the test's go-ahead (a line on stdin), fills the disk, then sleeps.
FILLER = """
import sys, time
print("ready", flush=True)
sys.stdin.readline()
try:
    with open(sys.argv[1], "wb") as f:
        while True:
            f.write(b"x" * 65536)
            f.flush()
except OSError:
    pass
print("full", flush=True)
try:
    time.sleep(float(sys.argv[2]))
except KeyboardInterrupt:
    sys.exit(3)
"""


def _start(out, fill, sleep_s: float) -> subprocess.Popen:
    p = subprocess.Popen(
        [*CIRCUIT, "run", "-o", str(out), "--", PY, "-c", code(FILLER), str(fill), str(sleep_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "ready"
    # let at least one flush (once a second) land before the disk fills
    assert wait_for(lambda: flushed_batches(out, "processes") >= 1, timeout=10)
    return p


def _target(out) -> int:
    return int(json.loads((out / "meta.json").read_text())["root_pid"])


def _check_kept(out) -> None:
    run = circuit.load(out)
    assert run.meta["finalized"] is False
    assert len(run.processes) > 0 and len(run.threads) > 0
    assert not [w for w in run.load_warnings if "unreadable" in w]
    # the batch that did not fit was cut off again: no part ends torn
    assert not [w for w in run.load_warnings if "cut short" in w]
    assert not list(out.rglob("*.tmp"))  # half-written files were removed


def _check_error(err: str, out, why: str) -> str:
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("circuit: error: could not write the run to")
    assert str(out) in last and why in last
    return last


def test_disk_full_target_runs_on_and_is_reaped(small_disk):
    out = small_disk / "run"
    # 3 s: a flush's batch may still fit in the last page of its part (tmpfs
    # slack, up to 4 KiB a table), and the next one cannot.
    p = _start(out, small_disk / "filler", 3.0)
    pid = _target(out)
    try:
        p.stdin.write("go\n")
        p.stdin.flush()
        _, err = p.communicate(timeout=30)
    finally:
        kill_quietly(pid)
        if p.poll() is None:
            p.kill()
    assert p.returncode == 2
    last = _check_error(err, out, "No space left on device")
    assert "exited with status 0" in last  # the target ran to its end
    assert not os.path.exists(f"/proc/{pid}")  # ...and circuit reaped it
    _check_kept(out)


def test_disk_full_then_ctrl_c_still_stops_the_target(small_disk):
    out = small_disk / "run"
    p = _start(out, small_disk / "filler", 60)
    pid = _target(out)
    try:
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "full"
        # wait for circuit's next flush to fail and say so
        line = p.stderr.readline()
        assert "tracing stopped, waiting for the target to exit" in line, line
        os.kill(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        kill_quietly(pid)
        if p.poll() is None:
            p.kill()
    assert p.returncode == 2
    last = _check_error(err, out, "No space left on device")
    assert "exited with status 3" in last  # the target's own SIGINT handling
    _check_kept(out)


def test_folder_turns_read_only(small_disk):
    out = small_disk / "run"
    p = _start(out, small_disk / "unused", 60)
    pid = _target(out)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        t0 = time.monotonic()
        line = p.stderr.readline()
        assert "Read-only file system" in line, line
        assert time.monotonic() - t0 < 10
        kill_quietly(pid, signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        kill_quietly(pid)
        if p.poll() is None:
            p.kill()
    assert p.returncode == 2
    _check_error(err, out, "Read-only file system")
    run = circuit.load(out)
    assert run.meta["finalized"] is False and len(run.processes) > 0


def test_attach_disk_full_leaves_the_target_running(small_disk):
    # attach: the target is not circuit's child; a write failure stops tracing
    # and leaves it alone.
    target = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    out = small_disk / "run"
    p: subprocess.Popen | None = None
    try:
        p = subprocess.Popen(
            [*CIRCUIT, "attach", str(target.pid), "-q", "-o", str(out)],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert wait_for(lambda: flushed_batches(out, "processes") >= 1, timeout=10)
        with open(small_disk / "filler", "wb") as f:  # the test fills the disk itself
            try:
                while True:
                    f.write(b"x" * 65536)
                    f.flush()
            except OSError:
                pass
        _, err = p.communicate(timeout=30)
        assert p.returncode == 2
        last = _check_error(err, out, "No space left on device")
        assert f"PID {target.pid} was left running" in last
        assert target.poll() is None  # still running, untouched
    finally:
        target.kill()
        target.wait()
        if p is not None and p.poll() is None:
            p.kill()
    run = circuit.load(out)
    assert run.meta["finalized"] is False and len(run.processes) > 0
    assert not list(out.rglob("*.tmp"))
