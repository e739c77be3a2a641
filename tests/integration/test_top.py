"""``circuit top`` on real targets: in a real terminal (tmux), as plain text
(--once, a pipe), and when the target exits while watched."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.helpers import CIRCUIT, PY, TARGETS, alive, cli, kill_quietly, wait_for

pytestmark = pytest.mark.integration

TARGET = str(TARGETS / "top_target.py")
# What each of the target's threads is doing: its row's state and wait reason.
EXPECTED = {
    "sleeper": ("S", "sleep"),
    "spinner": ("R", "running"),
    "locked": ("S", "lock"),
    "poller": ("S", "poll"),
}
# A thread row of the plain-text table (analysis/top_render.py).
ROW = re.compile(
    r"^\s*(?P<tid>\d+)\s{2}(?P<name>.{24})\s{2}(?P<state>\S+)\s+(?P<wait>\S+)\s+"
    r"(?P<cpu>[\d.]+)\s+(?P<csw>[\d.]+)\s+(?P<runq>[\d.]+)\s+(?P<share>.*)$"
)


def _start_target(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([PY, TARGET, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _rows(text: str) -> dict[str, dict[str, str]]:
    """Thread name -> its row's cells, from a table (the last row of each name)."""
    out = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            out[m["name"].strip()] = m.groupdict()
    return out


def _shares(cell: str) -> dict[str, float]:
    return {w: float(p) / 100 for w, p in re.findall(r"(\w+) (\d+)%", cell)}


class Tmux:
    """One tmux session with a shell, 200x50, on a private server socket."""

    def __init__(self) -> None:
        self.sock = f"circuit-top-{uuid.uuid4().hex[:8]}"
        self._tmux("new-session", "-d", "-x", "200", "-y", "50", "sh")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.sock, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout

    def type(self, line: str) -> None:
        self._tmux("send-keys", line, "Enter")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p")

    def until(self, pred, timeout: float = 30.0) -> str:
        """The screen once ``pred(screen)`` holds (fails with the screen after ``timeout``)."""
        seen = ""

        def check() -> bool:
            nonlocal seen
            seen = self.screen()
            return bool(pred(seen))

        assert wait_for(check, timeout=timeout, interval=0.2), f"screen was:\n{seen}"
        return seen

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux():
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    t = Tmux()
    yield t
    t.close()


def _command(*args: str) -> str:
    env = f"PYTHONPATH={shlex.quote(str(Path(__file__).resolve().parents[2]))}"
    return f"{env} {shlex.join([*CIRCUIT, *args])}"


@pytest.mark.slow
def test_top_in_a_terminal_shows_each_wait_and_q_leaves_the_target(tmux, tmp_path) -> None:
    out = tmp_path / "live"
    target = _start_target()
    try:
        tmux.type(_command("top", str(target.pid), "-o", str(out)))

        def rows_right(screen: str) -> bool:
            rows = _rows(screen)
            return all(
                n in rows and (rows[n]["state"], rows[n]["wait"]) == want
                for n, want in EXPECTED.items()
            )

        screen = tmux.until(rows_right)  # Python names come with py-spy's first dump
        assert f"pid {target.pid}  CPU" in screen and "GIL: holder now" in screen
        tmux.keys("s")
        tmux.until(lambda s: "sort wait" in s)
        tmux.keys("p")
        tmux.until(lambda s: "PAUSED" in s)
        tmux.keys("p")
        tmux.until(lambda s: "PAUSED" not in s)
        tmux.keys("d")  # the selected (first) thread's stack, from a py-spy dump now
        tmux.until(lambda s: "stack of " in s and "top_target.py" in s)
        tmux.keys("q")
        screen = tmux.until(lambda s: "run saved in" in s)
        assert alive(target.pid)  # q stops circuit, not an attached target
        assert "Traceback" not in screen
    finally:
        kill_quietly(target.pid)
        target.wait(timeout=10)
    res = cli("summary", str(out), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    names = {t["python_name"] for t in summary["threads"]}
    assert set(EXPECTED) <= names
    assert summary["stop_reason"] == "stopped by SIGINT"


def _summary_of(run_dir: Path, t0: int | None = None, t1: int | None = None) -> dict:
    """``circuit summary --json`` of a run, or (``t0``, ``t1``) of its samples
    in that span only, as a run attached for that span would have it."""
    if t0 is None:
        res = cli("summary", str(run_dir), "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)
    import circuit
    from circuit.analysis.summary import summarize_frames

    run = circuit.load(run_dir)

    def span(df):
        return df[(df["t_ns"] >= t0) & (df["t_ns"] <= t1)]

    meta = {**run.meta, "mode": "attach", "wall_s": (t1 - t0) / 1e9, "start_ns": t0}
    return summarize_frames(
        meta,
        span(run.threads),
        span(run.processes),
        run.procs,
        maps=run.maps,
        stacks=run.stacks,
        gil=span(run.gil),
    )


@pytest.mark.slow
def test_once_holds_the_figures_of_a_summary_of_the_same_window(tmp_path) -> None:
    """--once -o DIR: its table against `circuit summary DIR` (the same
    samples: equal to rounding), and against an attach beside it, over the
    span of the window (another sampler: within sampling tolerance)."""
    import circuit

    target = _start_target()
    try:
        # Started first and longer: its samples cover top's window, wherever
        # a loaded machine puts it.
        argv = ["attach", str(target.pid), "--duration", "5", "-o", str(tmp_path / "a")]
        beside = subprocess.Popen([*CIRCUIT, *argv, "-q", "--no-pyspy"])
        time.sleep(0.5)
        res = cli("top", str(target.pid), "--once", "-o", str(tmp_path / "top"), "-q")
        assert beside.wait(timeout=60) == 0
    finally:
        kill_quietly(target.pid)
        target.wait(timeout=10)
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout
    rows = _rows(res.stdout)
    assert set(EXPECTED) <= set(rows), res.stdout
    m = re.search(r"pid \d+  CPU ([\d.]+)%", res.stdout)
    assert m
    window = circuit.load(tmp_path / "top").processes["t_ns"]
    t0, t1 = int(window.min()), int(window.max())
    # The same samples: CPU % to rounding but for the summary's wall time,
    # which starts when sampling is asked for, tens of ms before the first
    # sample (the window's starts at it).  Another sampler over the same
    # span: its samples fall up to a period away from top's at either end.
    for s, cpu_tol, share_tol in (
        (_summary_of(tmp_path / "top"), 1.0, 0.02),
        (_summary_of(tmp_path / "a", t0, t1), 5.0, 0.05),
    ):
        wall = s["wall_s"]
        cpu = 100 * s["processes"][0]["cpu_s"] / wall
        assert float(m[1]) == pytest.approx(cpu, abs=cpu_tol, rel=0.03)
        by_tid = {t["tid"]: t for t in s["threads"]}
        for name, row in rows.items():
            if name not in EXPECTED:
                continue
            t = by_tid[int(row["tid"])]
            cpu = 100 * t["cpu_s"] / wall
            assert float(row["cpu"]) == pytest.approx(cpu, abs=cpu_tol, rel=0.03), name
            total = sum(t["time_by_wait"].values())
            want = {w: v / total for w, v in t["time_by_wait"].items() if v / total >= 0.005}
            got = _shares(row["share"])
            for w in set(want) | set(got):
                if max(want.get(w, 0), got.get(w, 0)) >= share_tol:  # (the table lists the top 4)
                    assert got.get(w, 0) == pytest.approx(want.get(w, 0), abs=share_tol), (name, w)
    assert _shares(rows["sleeper"]["share"]).get("sleep", 0) > 0.9
    assert _shares(rows["locked"]["share"]).get("lock", 0) > 0.9


@pytest.mark.slow
def test_a_command_that_exits_ends_top_with_its_status(tmux) -> None:
    tmux.type(_command("top", "--window", "1", "--", PY, TARGET, "2", "3") + "; echo rc=$?")
    screen = tmux.until(lambda s: re.search(r"^rc=\d+", s, re.M))
    assert "circuit: target exited (status 3)" in screen
    assert "rc=3" in screen
    assert "spinner" in screen  # the last frame, left on the terminal


@pytest.mark.slow
def test_q_stops_a_command_as_ctrl_c_under_run_would(tmux) -> None:
    tmux.type(_command("top", "--no-pyspy", "--", PY, TARGET) + "; echo rc=$?")
    tmux.until(lambda s: "spinner" in s or "sleep" in s)  # (kernel names: no py-spy)
    tmux.keys("q")
    screen = tmux.until(lambda s: re.search(r"^rc=\d+", s, re.M))
    # The command got the SIGINT a Ctrl-C gives it (KeyboardInterrupt in its
    # main thread, then killed by SIGINT), and circuit exits with its status.
    assert "rc=130" in screen, screen
    assert "circuit: target stopped (status 130)" in screen


def test_an_attached_target_that_exits_ends_top_with_0(tmp_path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    target = _start_target("1.5", "4")
    # stdout is a pipe: plain tables; no -o: a temporary run folder, removed
    res = cli("top", str(target.pid), "--window", "1", env={**os.environ, "TMPDIR": str(tmp)})
    target.wait(timeout=10)
    assert res.returncode == 0, res.stderr
    assert "circuit: target exited" in res.stdout
    assert "Traceback" not in res.stderr
    assert list(tmp.iterdir()) == []
