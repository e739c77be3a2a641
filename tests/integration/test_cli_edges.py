"""Behaviour at the edges: exit status, signals, errors, SIGKILL of circuit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import circuit
from tests.support.helpers import (
    CIRCUIT,
    PY,
    Spawned,
    cli,
    code,
    flushed_batches,
    kill_quietly,
    wait_for,
)

pytestmark = pytest.mark.integration


def _one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("circuit: error: ")
    return lines[0]


def test_exit_status_is_the_commands(tmp_path):
    p = cli("run", "-q", "-o", str(tmp_path / "r"), "--", PY, "-c", "raise SystemExit(7)")
    assert p.returncode == 7
    assert circuit.load(tmp_path / "r").meta["exit_code"] == 7


def test_killed_target_gives_128_plus_signal(tmp_path):
    src = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    p = cli("run", "-q", "-o", str(tmp_path / "r"), "--", PY, "-c", src)
    assert p.returncode == 128 + signal.SIGKILL
    meta = circuit.load(tmp_path / "r").meta
    assert meta["exit_signal"] == signal.SIGKILL
    assert meta["finalized"] is True


def test_sigint_to_circuit_is_forwarded_and_run_finalized(tmp_path):
    out = tmp_path / "r"
    src = code(
        """
        import sys, time
        print("ready", flush=True)
        try:
            time.sleep(30)
        except KeyboardInterrupt:
            sys.exit(3)
        """
    )
    p = subprocess.Popen(
        [*CIRCUIT, "run", "-q", "-o", str(out), "--", PY, "-c", src],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)  # a kill() aimed at circuit alone: forwarded
        assert p.wait(timeout=20) == 3
    finally:
        kill_quietly(p.pid)
    run = circuit.load(out)
    assert run.meta["finalized"] is True
    assert run.meta["exit_code"] == 3
    assert run.meta["stop_reason"] == "interrupted"
    assert len(run.threads) > 10


def test_target_ignoring_sigint_gets_sigterm_then_sigkill(tmp_path):
    out = tmp_path / "r"
    src = code(
        """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(30)
        """
    )
    p = subprocess.Popen(
        [*CIRCUIT, "run", "-o", str(out), "--", PY, "-c", src],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        for _ in range(3):
            time.sleep(0.3)
            p.send_signal(signal.SIGINT)
        assert p.wait(timeout=20) == 128 + signal.SIGKILL
        err = p.stderr.read()
    finally:
        kill_quietly(p.pid)
    assert "SIGTERM" in err and "SIGKILL" in err
    assert circuit.load(out).meta["exit_signal"] == signal.SIGKILL


def test_terminal_ctrl_c_reaches_target_once(tmp_path):
    # A terminal sends SIGINT to the whole foreground process group; circuit
    # must not forward a second copy (the target would see two).
    out = tmp_path / "r"
    counter = tmp_path / "count"
    src = code(
        f"""
        import signal, sys, time
        n = 0
        def h(*a):
            global n
            n += 1
        signal.signal(signal.SIGINT, h)
        print("ready", flush=True)
        time.sleep(1.0)
        open({str(counter)!r}, "w").write(str(n))
        """
    )
    p = subprocess.Popen(
        [*CIRCUIT, "run", "-q", "-o", str(out), "--", PY, "-c", src],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # own group, like a shell job
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        os.killpg(p.pid, signal.SIGINT)  # what the tty driver does on Ctrl-C
        p.wait(timeout=20)
    finally:
        kill_quietly(p.pid)
    # killpg() is SI_USER, not SI_KERNEL, so circuit cannot tell it from a
    # direct kill and forwards it too: the handler may run twice, never zero times.
    assert int(counter.read_text()) >= 1
    assert circuit.load(out).meta["finalized"] is True


def test_sigkill_of_circuit_leaves_a_loadable_run(tmp_path):
    out = tmp_path / "r"
    p = subprocess.Popen(
        [*CIRCUIT, "run", "-q", "-o", str(out), "--", PY, "-c", "import time; time.sleep(30)"],
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: flushed_batches(out, "threads") >= 2, 20)  # two flushes
        meta = json.loads((out / "meta.json").read_text())
        target = meta["root_pid"]
        p.kill()
        p.wait(timeout=10)
    finally:
        kill_quietly(p.pid)
    kill_quietly(target)
    run = circuit.load(out)
    assert run.meta["finalized"] is False
    assert any("not finalized" in w for w in run.load_warnings)
    span = (run.threads.t_ns.max() - run.threads.t_ns.min()) / 1e9
    assert span >= 0.9  # two flushes, one a second
    s = run.summary()
    assert s["finalized"] is False
    assert s["samples"] > 50
    assert s["threads"][0]["time_by_wait"]["sleep"] > 0.5


def test_attach_samples_a_running_process(tmp_path):
    with Spawned(
        """
        import threading, time
        ev = threading.Event()
        ts = [threading.Thread(target=ev.wait) for _ in range(3)]
        [t.start() for t in ts]
        print("ready", flush=True)
        time.sleep(30)
        """
    ) as child:
        p = cli("attach", str(child.pid), "--duration", "0.5", "-q", "-o", str(tmp_path / "a"))
        assert p.returncode == 0, p.stderr
    run = circuit.load(tmp_path / "a")
    assert run.meta["mode"] == "attach"
    assert run.meta["stop_reason"] == "duration reached"
    s = run.summary()
    assert len(s["threads"]) == 4
    waiters = [t for t in s["threads"] if t["tid"] != t["pid"]]
    assert all(t["time_by_wait"]["lock"] > 0.3 for t in waiters)
    # attach mode counts CPU from when we started looking
    assert s["cpu_s"] < 0.2


def test_attach_stops_when_target_exits(tmp_path):
    with Spawned('import time\nprint("ready", flush=True)\ntime.sleep(0.5)\n') as child:
        p = cli("attach", str(child.pid), "-q", "-o", str(tmp_path / "a"))
    assert p.returncode == 0, p.stderr
    assert circuit.load(tmp_path / "a").meta["stop_reason"] == "target exited"


def test_errors_are_one_line(tmp_path):
    assert "command not found: no-such-cmd-xyz" in _one_line_error(
        cli("run", "-o", str(tmp_path / "x"), "--", "no-such-cmd-xyz")
    )
    assert "no process with PID" in _one_line_error(cli("attach", "999999999"))
    assert "is not a circuit run folder" in _one_line_error(cli("summary", str(tmp_path)))
    assert "no such file" in _one_line_error(cli("summary", str(tmp_path / "nope")))
    assert "no command given" in _one_line_error(cli("run", "-o", str(tmp_path / "y")))
    assert "it is a directory" in _one_line_error(
        cli("run", "-o", str(tmp_path / "w"), "--", "/tmp")
    )
    assert "--rate" in _one_line_error(
        cli("run", "--rate", "0", "-o", str(tmp_path / "z"), "--", PY, "-c", "1")
    )
    for bad in ("0", "nan", "inf"):  # nan and inf once failed deep in the loop
        out = tmp_path / f"d{bad}"
        err = _one_line_error(cli("attach", "--duration", bad, "-o", str(out), str(os.getpid())))
        assert "--duration must be a positive number of seconds" in err
        assert not out.exists()  # refused before the run folder was made


def test_unwritable_output_is_refused_before_the_target_starts(tmp_path):
    marker = tmp_path / "started"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = cli("run", "-o", str(blocker / "run"), "--", PY, "-c", f"open({str(marker)!r}, 'w')")
    assert "output folder" in _one_line_error(p)
    assert not marker.exists()


def test_existing_run_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "r"
    assert cli("run", "-q", "-o", str(out), "--", PY, "-c", "1").returncode == 0
    assert "--force" in _one_line_error(cli("run", "-q", "-o", str(out), "--", PY, "-c", "1"))
    assert cli("run", "-q", "--force", "-o", str(out), "--", PY, "-c", "1").returncode == 0
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    assert "not a circuit run" in _one_line_error(
        cli("run", "-q", "--force", "-o", str(other), "--", PY, "-c", "1")
    )
    assert (other / "precious.txt").exists()


def test_default_output_folder(tmp_path):
    p = cli("run", "--", PY, "-c", "1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run_dir,) = (tmp_path / "circuit-runs").iterdir()
    assert circuit.load(run_dir).meta["finalized"]
    assert str(Path("circuit-runs") / run_dir.name) in p.stderr


def test_summary_json_public_keys(tmp_path):
    out = tmp_path / "r"
    cli("run", "-q", "-o", str(out), "--", PY, "-c", "import time; time.sleep(0.2)")
    s = json.loads(cli("summary", str(out), "--json").stdout)
    for k in ("wall_s", "cpu_user_s", "cpu_system_s", "parallelism", "samples", "rate_hz"):
        assert isinstance(s[k], (int, float)), k
    assert s["exit_code"] == 0
    (p,) = s["processes"]
    for k in ("pid", "ppid", "cmdline", "cpu_s", "rss_peak_bytes", "threads_peak", "fds_peak"):
        assert k in p
    assert set(p["fds_peak_by_kind"]) >= {"file", "socket", "pipe", "epoll", "device", "other"}
    (t,) = s["threads"]
    for k in ("pid", "tid", "name", "cpu_s", "ctx_voluntary", "ctx_involuntary", "run_delay_s"):
        assert k in t
    assert set(t["time_by_wait"]) >= {"running", "sleep", "lock", "poll", "socket", "pipe"}
    assert t["time_by_wait"]["sleep"] > 0.1
    # each value is rounded to the µs: the sums may differ by half a µs per value
    slack = 0.5e-6 * (len(t["time_by_wait"]) + len(t["time_by_state"]))
    assert abs(sum(t["time_by_wait"].values()) - sum(t["time_by_state"].values())) <= slack
    human = cli("summary", str(out))
    assert human.returncode == 0 and "parallelism" in human.stdout


def test_python_dash_m_circuit_and_help():
    p = cli("--help")
    assert p.returncode == 0 and "circuit run" in p.stdout
    for sub in ("run", "attach", "summary"):
        h = cli(sub, "--help")
        assert h.returncode == 0 and "usage:" in h.stdout


def test_no_resource_left_unclosed_under_dev_mode(tmp_path):
    # python -X dev shows what a run leaves to the garbage collector: the
    # taskstats socket (as root) and the target's Popen, reaped by hand.
    p = subprocess.run(
        [PY, "-X", "dev", "-W", "always", "-m", "circuit", "run", "-q", "-o", str(tmp_path / "r"),
         "--", PY, "-c", "import time; time.sleep(0.3)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "ResourceWarning" not in p.stderr, p.stderr


def test_attach_takes_sigusr1_and_sigterm_itself(tmp_path):
    # pyarrow starts native threads (OpenBLAS, through numpy): blocked before
    # they start, they inherit the mask.  Otherwise a kill aimed at circuit
    # is delivered to one of them: SIGUSR1 and SIGTERM killed circuit outright.
    out = tmp_path / "a"
    with Spawned('import time\nprint("ready", flush=True)\ntime.sleep(30)\n') as child:
        p = subprocess.Popen(
            [*CIRCUIT, "attach", str(child.pid), "-q", "-o", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert wait_for(lambda: (out / "threads.parts").exists())  # sampling
            p.send_signal(signal.SIGUSR1)  # an on-demand dump
            assert wait_for(lambda: "demand" in _dump_triggers(out))
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=30)
        finally:
            kill_quietly(p.pid)
    assert p.returncode == 0, err
    meta = circuit.load(out).meta
    assert meta["finalized"] and meta["stop_reason"] == "stopped by SIGTERM"


def _dump_triggers(run: Path) -> str:
    f = run / "pyspy" / "dumps.jsonl"
    return f.read_text() if f.exists() else ""


def test_a_run_says_when_the_sampler_fell_behind():
    from circuit.tracer.loop import LoopStats
    from circuit.tracer.session import _behind

    def stats(
        samples: int, seconds: float, missed: int = 0, cpu: float = 0.0, scans: float = 0.0
    ) -> LoopStats:
        last = round(seconds * 1e9)
        return LoopStats(samples, 0, missed, 0, last, cpu, scans)

    assert _behind(stats(101, 1.0), 100) is None  # held
    assert _behind(stats(92, 1.0), 100) is None  # within 10%
    note = _behind(stats(51, 1.0, missed=49), 100)
    assert note is not None and "kept 50.0 of the 100 Hz asked (49 deadlines missed)" in note
    assert _behind(stats(10, 1.0), 100) is None  # too few samples to tell
    # It names the causes it measured, and only those, with what would help.
    churn = _behind(stats(51, 1.0, 49, cpu=0.5, scans=0.4), 100, 8, load=0.5, cores=2)
    assert churn is not None and "fd scans took 80% of its 0.50 s of CPU (--no-fds" in churn
    assert "threads" not in churn and "busy" not in churn
    many = _behind(stats(51, 1.0, 49, cpu=0.5, scans=0.05), 100, 800, load=0.5, cores=2)
    assert many is not None and "800 threads per sample (a lower --rate)" in many
    assert "fd scans" not in many
    busy = _behind(stats(51, 1.0, 49, cpu=0.1), 100, 8, load=3.0, cores=2)
    assert busy is not None and "busy: load average 3.0 on 2 cores" in busy
    unclear = _behind(stats(51, 1.0, 49, cpu=0.1), 100, 8, load=0.5, cores=2)
    assert unclear is not None and "no single cause stood out (sampler CPU 10%" in unclear


def test_attach_refuses_what_has_nothing_to_trace(tmp_path):
    from circuit.tracer.session import SessionError, check_attachable

    with pytest.raises(SessionError, match="is circuit itself"):
        check_attachable(os.getpid())
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        stat = Path(f"/proc/{pid}/stat")
        assert wait_for(lambda: stat.read_text().rsplit(") ", 1)[1][0] == "Z")
        err = _one_line_error(cli("attach", str(pid), "-o", str(tmp_path / "z")))
        assert f"PID {pid} has exited" in err
    finally:
        os.waitpid(pid, 0)
    kthreads = [
        int(d)
        for d in os.listdir("/proc")
        if d.isdigit() and _stat_flags(int(d)) & 0x00200000  # PF_KTHREAD
    ]
    if kthreads:  # (none visible in some containers)
        err = _one_line_error(cli("attach", str(kthreads[0]), "-o", str(tmp_path / "k")))
        assert "is a kernel thread" in err


def _stat_flags(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b") ", 1)[1].split()[6])
    except (OSError, IndexError, ValueError):
        return 0


def test_empty_output_folder_and_report_into_a_folder(tmp_path):
    err = cli("run", "-o", "", "--", PY, "-c", "1").stderr
    assert "a folder name is needed, not an empty string" in err
    run = tmp_path / "r"
    assert cli("run", "-q", "-o", str(run), "--", PY, "-c", "1").returncode == 0
    into = tmp_path / "reports"
    into.mkdir()
    p = cli("report", str(run), "-o", str(into))  # a folder: the report goes in it
    assert p.returncode == 0, p.stderr
    assert (into / "r-report.html").exists() and (into / "r-report.md").exists()
    assert not (tmp_path / "reports.html").exists()
