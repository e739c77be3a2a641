"""The article's claims, measured: workloads under each model, traced for real.

Each test starts ``python -m circuit.workloads`` under the real tracer
(circuit.tracer.session.run_command) and checks what the trace shows.  Wall
times are the workload's own clock around its tasks; tolerances allow for a
busy 2-core machine (other processes, the sampler itself) but are tight
enough that the wrong model would fail (the sum vs the max of the waits).
"""

from __future__ import annotations

import functools
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import circuit
from circuit.analysis.summary import period_ns, time_by, with_durations
from circuit.tracer.session import Options, run_command
from circuit.workloads import DISK_BYTES, UNITS, WORKLOADS, available_models, duration

PY = sys.executable


def trace_workload(
    out: Path, workload: str, model: str, tasks: int, scale: float, *extra: str
) -> tuple[circuit.Run, dict[str, Any], dict[str, Any]]:
    """Trace one workload run; return (run, summary, the workload's JSON record)."""
    res = out / "workload.json"
    cmd = [PY, "-m", "circuit.workloads", workload, "--model", model]
    cmd += ["--tasks", str(tasks), "--scale", str(scale), "--result", str(res), *extra]
    code, _meta = run_command(cmd, Options(out=out, quiet=True, force=True))
    assert code == 0, f"{workload}/{model} exited {code}"
    run = circuit.load(out)
    return run, run.summary(), json.loads(res.read_text())


def task_window(run: circuit.Run) -> tuple[int, int]:
    m = run.marks
    return int(m.loc[m["name"] == "tasks-start", "t_ns"].min()), int(
        m.loc[m["name"] == "tasks-end", "t_ns"].max()
    )


def wait_shares(run: circuit.Run, pid: int) -> pd.DataFrame:
    """Per thread of ``pid``: share of its sampled time in each wait reason,
    counting only samples while the tasks ran (not interpreter start-up)."""
    lo, hi = task_window(run)
    df = with_durations(run.threads, period_ns(run.meta))
    df = df[(df["pid"] == pid) & (df["t_ns"] >= lo) & (df["t_ns"] <= hi)]
    t = time_by(df, "wait").droplevel("pid")  # run-queue time as `runnable`
    return t.div(t.sum(axis=1), axis=0)


def proc(summary: dict[str, Any], pid: int) -> dict[str, Any]:
    return next(p for p in summary["processes"] if p["pid"] == pid)


def max_open_sockets(fds: pd.DataFrame, pid: int, remote_port: int) -> int:
    """Most TCP sockets ``pid`` held at once to ``remote_port``, from open/close events."""
    open_now: set[int] = set()
    peak = 0
    for r in fds[fds["pid"] == pid].sort_values("t_ns", kind="stable").itertuples():
        # "addr": a socket first seen without an address got one (connected later)
        if r.event in ("open", "addr") and str(r.remote).endswith(f":{remote_port}"):
            open_now.add(r.fd)
        elif r.event == "close":
            open_now.discard(r.fd)
        peak = max(peak, len(open_now))
    return peak


# ---------------------------------------------------------------- io-sleep


def _untraced(*args: str) -> dict[str, Any]:
    p = subprocess.run(
        [PY, "-m", "circuit.workloads", *args], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


SLEEP_SCALE = 0.2  # tasks of 0.8 s and 0.6 s: sum 1.4 s, max 0.8 s
SUM = (UNITS[0] + UNITS[1]) * SLEEP_SCALE
MAX = max(UNITS) * SLEEP_SCALE
# Late wake-ups on a loaded machine only ever add time.
SLACK = 0.2


@pytest.mark.integration
@pytest.mark.parametrize(
    ("model", "expected", "waiting"),
    [("sequential", SUM, "sleep"), ("threads", MAX, "sleep"), ("asyncio", MAX, "poll")],
)
def test_io_sleep_sum_vs_max(tmp_path: Path, model: str, expected: float, waiting: str) -> None:
    run, s, res = trace_workload(tmp_path / model, "io-sleep", model, 2, SLEEP_SCALE)
    assert expected - 0.01 <= res["wall_s"] <= expected + SLACK, res["wall_s"]
    # Near-zero CPU: sleeping costs nothing.  The whole run includes the
    # interpreter's start-up, the task phase itself should be almost free.
    assert res["cpu_s"] < 0.1
    assert s["cpu_s"] < 0.1 * s["wall_s"] + 0.3
    shares = wait_shares(run, res["pid"])
    if model == "threads":
        workers = shares.drop(index=res["pid"])  # the main thread waits in join()
        assert len(workers) == 2
        assert (workers[waiting] > 0.8).all(), workers
    else:
        # time.sleep is clock_nanosleep ("sleep"); asyncio.sleep is the event
        # loop's epoll_wait timeout ("poll"): the same wait, seen from the kernel.
        assert len(shares) == 1
        assert shares.loc[res["pid"], waiting] > 0.8, shares
    marks = run.marks
    starts = marks[marks["name"] == "task-start"]
    ends = marks[marks["name"] == "task-end"]
    assert sorted(starts["field_task"]) == [0, 1]
    assert sorted(ends["field_task"]) == [0, 1]
    if model == "threads":
        assert starts["tid"].nunique() == 2  # each task on its own thread


@pytest.mark.integration
@pytest.mark.parametrize(
    "model", [m for m in available_models() if m not in ("sequential", "threads", "asyncio")]
)
def test_io_sleep_other_models_overlap(model: str) -> None:
    """Pools, processes and uvloop also overlap the two waits (untraced: cheap)."""
    scale = 0.1
    res = _untraced("io-sleep", "--model", model, "--scale", str(scale))
    assert duration(0, scale) - 0.01 <= res["wall_s"] < duration(0, scale) + duration(1, scale)


@pytest.mark.integration
@pytest.mark.parametrize("model", ["thread-pool", "process-pool"])
def test_pool_size_bounds_concurrency(model: str) -> None:
    """4 tasks (0.4, 0.3, 0.4, 0.3 s) on 2 workers: two rounds, ~0.7 s, not ~0.4 s."""
    res = _untraced(
        "io-sleep", "--model", model, "--tasks", "4", "--workers", "2", "--scale", "0.1"
    )
    assert res["workers"] == 2
    assert 0.69 <= res["wall_s"] < 0.7 + SLACK


# ---------------------------------------------------------------- cpu-count

CPU_SCALE = 0.12  # 12,000,000 increments per task: ~0.35 s here; fork cost stays small beside it
CPU_MODELS = ("sequential", "threads", "asyncio", "processes")
# Above this much run-queue delay per CPU second, the cores were not free: the
# machine was busy with other work and wall-clock ratios say nothing about models.
BUSY = 0.25


def delay_share(s: dict[str, Any], server_pid: int | None = None) -> float:
    """Run-queue delay over CPU time, over all the workload's threads."""
    ts = [t for t in s["threads"] if t["pid"] != server_pid]
    return sum(t["run_delay_s"] for t in ts) / max(sum(t["cpu_s"] for t in ts), 1e-9)


@pytest.fixture(scope="module")
def cpu_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """cpu-count, 2 tasks, under 4 models, 3 times interleaved (a busy moment hits all)."""
    base = tmp_path_factory.mktemp("cpu")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in CPU_MODELS}
    for rep in range(3):
        for m in CPU_MODELS:
            _run, s, res = trace_workload(base / f"{m}{rep}", "cpu-count", m, 2, CPU_SCALE)
            kids = [p for p in s["processes"] if p["pid"] != res["pid"]]
            runs[m].append(
                {
                    "wall": res["wall_s"],
                    "cpu": res["cpu_s"],
                    "par": res["cpu_s"] / res["wall_s"],
                    "delay": delay_share(s),
                    "children": len(kids),
                }
            )
    return runs


def med(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


@pytest.mark.integration
@pytest.mark.slow
def test_cpu_count_gil_one_cpu_at_a_time(cpu_runs: dict[str, list[dict[str, Any]]]) -> None:
    """Holds however busy the machine is: CPU time is what a run did, not when."""
    # The GIL: the two counting threads never run bytecode at once, so the
    # process never uses more than one CPU second per second.
    for m in ("sequential", "threads", "asyncio"):
        assert max(r["par"] for r in cpu_runs[m]) < 1.15, (m, cpu_runs[m])
    # Same work in every model: about the same CPU time as sequential.
    seq_cpu = med(cpu_runs["sequential"], "cpu")
    for m in ("threads", "asyncio", "processes"):
        assert 0.7 < med(cpu_runs[m], "cpu") / seq_cpu < 1.5, (m, cpu_runs)
    assert all(r["children"] == 2 for r in cpu_runs["processes"])  # one process per task


@pytest.mark.integration
@pytest.mark.slow
def test_cpu_count_wall_times(cpu_runs: dict[str, list[dict[str, Any]]]) -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("processes need 2 CPUs to run in parallel")
    wall = {m: med(v, "wall") for m, v in cpu_runs.items()}
    delay = {m: round(float(med(v, "delay")), 2) for m, v in cpu_runs.items()}
    one_cpu = {m: round(float(med(cpu_runs[m], "par")), 2) for m in ("sequential", "threads")}
    if max(delay.values()) > BUSY or min(one_cpu.values()) < 0.9:
        # Measured, not guessed: the threads waited that long for a CPU per CPU
        # second they got, or a lone counting thread got less than 90% of a CPU:
        # the 2 cores were not free for these runs.
        pytest.skip(
            f"cores busy elsewhere (run-queue delay per CPU second {delay}; "
            f"CPU per wall second {one_cpu}): walls {wall}"
        )
    # No faster: the GIL.  Real parallelism would give ~0.5x; the margin is
    # this shared VM's run-to-run noise on sub-second runs (±20% seen).
    assert wall["threads"] > 0.75 * wall["sequential"], wall
    assert 0.75 < wall["asyncio"] / wall["sequential"] < 1.33, wall  # the loop counts as written
    # Two cores, two processes: both count at once (CPU seconds per wall
    # second, measured on the run itself, so a lucky fast sequential run
    # cannot fail it), and the wall shows it despite the pool's start-up
    # (~0.1-0.15 s beside ~0.35 s tasks: 1.2x is what is left at worst).
    par = med(cpu_runs["processes"], "par")
    assert par > 1.4, (par, wall)
    assert wall["sequential"] / wall["processes"] > 1.2, wall


# ---------------------------------------------------------------- cpu-hash

HASH_THREADS = (1, 2, 4)
# Above this many cores of CPU used by the rest of the machine while a run
# lasted, the 2 cores were not free for it.
OTHERS_CORES = 0.3


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_cores(f: Any) -> tuple[Any, float]:
    """Call ``f()``; return its result and the cores the rest of the machine used
    meanwhile: machine-wide busy time less this process's and its children's
    (the tracer runs here, the workload is its reaped child)."""
    m0, t0, w0 = machine_busy_s(), os.times(), time.monotonic()
    out = f()
    m1, t1, w1 = machine_busy_s(), os.times(), time.monotonic()
    mine = sum(t1[:4]) - sum(t0[:4])
    return out, max(0.0, (m1 - m0) - mine) / max(w1 - w0, 1e-9)


@pytest.fixture(scope="module")
def hash_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, Any]]]:
    """cpu-hash under threads at 1, 2 and 4 tasks, 3 times interleaved."""
    base = tmp_path_factory.mktemp("hash")
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in HASH_THREADS}
    for rep in range(3):
        for n in HASH_THREADS:
            go = functools.partial(
                trace_workload, base / f"t{n}r{rep}", "cpu-hash", "threads", n, CPU_SCALE
            )
            (run, _s, res), others = others_cores(go)
            workers = wait_shares(run, res["pid"]).drop(index=res["pid"])
            runs[n].append(
                {
                    "wall": res["wall_s"],
                    "cpu": res["cpu_s"],
                    "par": res["cpu_s"] / res["wall_s"],
                    "others": others,
                    "workers": len(workers),
                    "gil": float(workers.get("gil", pd.Series([0.0])).max()),
                }
            )
    return runs


@pytest.mark.integration
def test_cpu_hash_every_model_does_the_same_work() -> None:
    """Untraced and small: every model runs it, for about the same CPU time."""
    cpu = {}
    for m in available_models():
        res = _untraced("cpu-hash", "--model", m, "--tasks", "2", "--scale", "0.05")
        assert res["workload"] == "cpu-hash" and res["model"] == m
        cpu[m] = res["cpu_s"]
    # 2 x 205 MiB of SHA-256 in every model; interpreter and fork costs aside.
    for c in cpu.values():
        assert 0.6 < c / cpu["sequential"] < 1.6, cpu


@pytest.mark.integration
@pytest.mark.slow
def test_cpu_hash_threads_use_both_cores(hash_sweep: dict[int, list[dict[str, Any]]]) -> None:
    """hashlib releases the GIL: on 2 cores, 2 hashing threads take the time of
    one (2 counting threads take twice as long, test_cpu_count_wall_times)."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("threads need 2 CPUs to run in parallel")
    assert all(r["workers"] == n for n, v in hash_sweep.items() for r in v), hash_sweep
    wall = {n: round(float(med(v, "wall")), 3) for n, v in hash_sweep.items()}
    par = {n: round(float(med(v, "par")), 2) for n, v in hash_sweep.items()}
    # Measured from the machine, not from the threads (threads taking turns
    # with the GIL wait for a CPU after each hand-over whatever the load).
    others = {n: round(float(med(v, "others")), 2) for n, v in hash_sweep.items()}
    if max(others.values()) > OTHERS_CORES:
        pytest.skip(
            f"cores busy elsewhere (other processes used {others} cores during the runs): "
            f"walls {wall}, CPU per wall second {par}"
        )
    # Each task hashes the same bytes: CPU time grows with the tasks.
    cpu = {n: float(med(v, "cpu")) for n, v in hash_sweep.items()}
    assert 1.6 < cpu[2] / cpu[1] < 2.4 and 1.6 < cpu[4] / cpu[2] < 2.4, cpu
    # Both cores at once: 2 CPU seconds per wall second is perfect, 1 is the
    # GIL; the bounds sit halfway, as other jobs on the machine take a share.
    assert par[2] > 1.4, (par, wall)
    assert par[4] > 1.4, (par, wall)
    # Twice the work in about the same time (the GIL would make it 2x).
    assert wall[2] < 1.5 * wall[1], wall
    # The threads do not queue for the GIL (a counting thread spends ~half its
    # time so beside another).
    assert max(r["gil"] for r in hash_sweep[2]) < 0.1, hash_sweep[2]


@pytest.mark.integration
def test_cpu_hash_asyncio_blocks_the_loop(tmp_path: Path) -> None:
    """On the event loop as written: one thread, one hash at a time."""
    run, s, res = trace_workload(tmp_path, "cpu-hash", "asyncio", 2, CPU_SCALE)
    assert proc(s, res["pid"])["threads_peak"] == 1
    assert res["cpu_s"] / res["wall_s"] < 1.15, res
    shares = wait_shares(run, res["pid"])
    # on a CPU or queued for one (a busy machine), never back in its selector
    on_cpu = shares.loc[res["pid"], "running"] + shares.loc[res["pid"]].get("runnable", 0.0)
    assert on_cpu > 0.9, shares


# ---------------------------------------------------------------- io-http

HTTP_TASKS = 3
HTTP_SCALE = 0.2  # server latencies 0.8, 0.6, 0.8 s


@pytest.mark.integration
def test_io_http_asyncio_one_thread_one_epoll(tmp_path: Path) -> None:
    run, s, res = trace_workload(tmp_path, "io-http", "asyncio", HTTP_TASKS, HTTP_SCALE)
    client, server = proc(s, res["pid"]), proc(s, res["server_pid"])
    assert server["ppid"] == client["pid"]  # the server is the harness's child, traced too
    assert client["threads_peak"] == 1
    assert client["fds_peak_by_kind"]["epoll"] == 1
    port = _server_port(run.fds, res["server_pid"])
    # All requests in flight at once over one thread: N sockets, no more.
    assert max_open_sockets(run.fds, res["pid"], port) == HTTP_TASKS
    shares = wait_shares(run, res["pid"])
    assert shares.loc[res["pid"], "poll"] > 0.7, shares
    assert wall_close_to(res["wall_s"], max(duration(i, HTTP_SCALE) for i in range(HTTP_TASKS)))
    _check_server_side(run, res, port)


@pytest.mark.integration
def test_io_http_threads_block_in_socket_or_poll(tmp_path: Path) -> None:
    run, s, res = trace_workload(tmp_path, "io-http", "threads", HTTP_TASKS, HTTP_SCALE)
    client = proc(s, res["pid"])
    assert client["threads_peak"] == HTTP_TASKS + 1
    assert client["fds_peak_by_kind"]["epoll"] == 0  # blocking sockets need no event loop
    port = _server_port(run.fds, res["server_pid"])
    assert max_open_sockets(run.fds, res["pid"], port) == HTTP_TASKS
    shares = wait_shares(run, res["pid"]).drop(index=res["pid"])
    assert len(shares) == HTTP_TASKS
    blocked = shares.reindex(columns=["socket", "poll"], fill_value=0).sum(axis=1)
    assert (blocked > 0.7).all(), shares
    assert wall_close_to(res["wall_s"], max(duration(i, HTTP_SCALE) for i in range(HTTP_TASKS)))
    _check_server_side(run, res, port)


def wall_close_to(wall: float, expected: float) -> bool:
    return expected - 0.01 <= wall <= expected + 0.3


def _server_port(fds: pd.DataFrame, server_pid: int) -> int:
    listen = fds[(fds["pid"] == server_pid) & (fds["proto"] == "tcp LISTEN")]
    assert len(listen) == 1
    return int(str(listen["local"].iloc[0]).rsplit(":", 1)[1])


def _check_server_side(run: circuit.Run, res: dict[str, Any], port: int) -> None:
    """Each end of every connection is counted in its own process."""
    fds = run.fds
    est = fds[fds["event"].isin(["open", "addr"]) & (fds["proto"] == "tcp ESTABLISHED")]
    client = est[est["pid"] == res["pid"]]
    server = est[est["pid"] == res["server_pid"]]
    assert set(client["remote"]) == {f"127.0.0.1:{port}"}
    assert set(server["local"]) == {f"127.0.0.1:{port}"}
    assert set(server["remote"]) == set(client["local"])
    assert len(server) == HTTP_TASKS


# ---------------------------------------------------------------- disk, mixed


@pytest.mark.integration
def test_disk_cleans_up(tmp_path: Path) -> None:
    d = tmp_path / "scratch"
    d.mkdir()
    run, _s, res = trace_workload(
        tmp_path / "run", "disk", "threads", 2, 0.05, "--dir", str(d)
    )  # 2 x 3.2 MiB
    assert list(d.iterdir()) == []
    assert len(run.marks[run.marks["name"] == "task-end"]) == 2
    # The data went through the kernel: written and read back in full.
    io = run.processes.groupby("pid")[["write_chars", "read_chars"]].max().loc[res["pid"]]
    assert io["write_chars"] >= 2 * 0.05 * DISK_BYTES
    assert io["read_chars"] >= 2 * 0.05 * DISK_BYTES


@pytest.mark.integration
def test_mixed_threads_overlap_waits_with_cpu() -> None:
    out = {}
    for m in ("sequential", "threads"):
        out[m] = _untraced("mixed", "--model", m, "--scale", "0.1")
    # One task's sleeps run while the other counts: the waits overlap.
    assert out["threads"]["wall_s"] < out["sequential"]["wall_s"]
    assert out["sequential"]["cpu_s"] > 0.05


# ---------------------------------------------------------------- interpreter


def _other_python() -> str | None:
    me = os.path.realpath(sys.executable)
    for exe in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/bin/python3.1*"))):
        if exe.endswith("-config") or os.path.realpath(exe) == me:
            continue
        if os.access(exe, os.X_OK) and f"{sys.version_info[0]}.{sys.version_info[1]}" not in exe:
            return exe
    return None


@pytest.mark.integration
def test_python_option_records_interpreter(tmp_path: Path) -> None:
    other = _other_python()
    if other is None:
        pytest.skip("no second Python >= 3.10 on this machine")
    run, _s, res = trace_workload(
        tmp_path, "io-sleep", "processes", 2, 0.05, "--python", other
    )  # circuit is not installed there: the harness boots it from source
    assert res["python"] == other
    assert res["python_version"] != ".".join(map(str, sys.version_info[:3]))
    probe = subprocess.run(
        [other, "-c", "import sys; print(getattr(sys, '_is_gil_enabled', lambda: True)())"],
        capture_output=True,
        text=True,
    )
    assert res["gil_enabled"] == (probe.stdout.strip() == "True")
    marks = run.marks
    assert marks.loc[marks["name"] == "workload", "field_python"].iloc[0] == other
    assert len(marks[marks["name"] == "task-end"]) == 2  # marks work in booted children too


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nope"], ", ".join(WORKLOADS)),
        ([], ", ".join(WORKLOADS)),
        (["io-sleep", "--model", "fibers"], "sequential, threads, asyncio, processes"),
        (["io-sleep", "--tasks", "0"], "at least 1"),
        (["io-sleep", "--scale", "0"], "greater than 0"),
        (["io-sleep", "--scale", "-1"], "greater than 0"),
        (["io-sleep", "--scale", "inf"], "greater than 0"),
        (["io-sleep", "--tasks", "two"], "invalid int value"),
        (["io-sleep", "--python", "/no/such/python"], "no such interpreter"),
    ],
)
def test_bad_input_one_line(args: list[str], says: str) -> None:
    p = subprocess.run(
        [PY, "-m", "circuit.workloads", *args], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "error:" in lines[0] and says in lines[0]
    assert "Traceback" not in p.stderr
