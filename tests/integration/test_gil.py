"""GIL waits told from lock waits, and GIL metrics, measured from outside the process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import circuit
from circuit.analysis.gil import classify_gil
from tests.support.helpers import TARGETS

TARGET = TARGETS / "gil_target.py"


HASH = """
import hashlib, sys, threading, time
n, secs = int(sys.argv[1]), float(sys.argv[2])
buf = bytes(32 << 20)
def work():
    end = time.monotonic() + secs
    while time.monotonic() < end:
        hashlib.sha256(buf).digest()  # releases the GIL for the whole buffer
ts = [threading.Thread(target=work, name=f"h{i}") for i in range(n)]
[t.start() for t in ts]
[t.join() for t in ts]
"""


def _run(
    tmp_path: Path,
    *target: str,
    rate: int = 500,
    extra: tuple[str, ...] = (),
    script: Path = TARGET,
    name: str = "run",
    priority: bool = True,
) -> tuple:
    """circuit run on a target; with ``priority`` the sampler gets CPU priority over it.

    A GIL measurement needs samples at the requested rate; on a machine
    busy with other work a starved sampler sees only a few intervals
    (docs/pyspy.md).  circuit runs at nice -10 (as root; otherwise nice
    warns and both run at the same priority) and the target back at 0.
    Without ``priority`` both run at the caller's: a 1 kHz sampler at
    nice -10 preempts the target a thousand times a second, and on 2 busy
    cores that showed its threads in ``gil`` 0.04-0.11 more often than the
    kernel's counters account for (0.00-0.05 at equal priority).
    """
    out = tmp_path / name
    nice = ["nice", "-n", "-10"] if priority else []
    cmd = [*nice, sys.executable, "-m", "circuit", "run", "-q", "-o", str(out)]
    cmd += ["--force", "--rate", str(rate), "--no-fds", *extra, "--"]
    cmd += ["nice", "-n", "10"] if priority else []
    cmd += [sys.executable, str(script), *target]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return circuit.load(out), proc.stdout


def _workers(summary: dict) -> list[dict]:
    return [t for t in summary["gil"]["threads"] if t["tid"] != t["pid"]]


def _off_cpu_share(summary: dict, tid: int) -> float:
    """A CPU-bound thread's GIL wait as the kernel's counters give it, not
    the samples: the share of its sampled time neither on a CPU nor queued
    for one (schedstat's run time and run delay; it sleeps on nothing else)."""
    (t,) = [t for t in summary["threads"] if t["tid"] == tid]
    total = sum(t["time_by_wait"].values())
    return (total - t["cpu_s"] - t["run_delay_s"]) / total


# The share of its time a GIL-bound worker may spend queued for a CPU when
# the target has the cores to itself (0.06-0.29 measured: the woken waiter
# queues behind the holder and the sampler).
BUSY = 0.3


def _run_delay_share(summary: dict, tid: int) -> float:
    (t,) = [t for t in summary["threads"] if t["tid"] == tid]
    return round(float(t["run_delay_s"] / sum(t["time_by_wait"].values())), 2)


def _check_against_the_kernel(s: dict, workers: list[dict]) -> None:
    """GIL wait per thread and over the workers against their off-CPU time.

    Tolerances: per thread, four binomial standard errors of the thread's
    sample count plus 0.02 of bias, at least 0.1 (at 100 Hz over 2 s, ~200
    samples of a 0.5-0.7 share: sigma ~0.035, and 48 threads over 12 runs
    spread -0.08..+0.06 around -0.01); over 2-4 threads the errors largely
    cancel (their waits share one GIL), so 0.05 covers the bias measured at
    1 kHz (+0.01-0.02, up to +0.05 on 2 busy cores)."""
    queued = [_run_delay_share(s, t["tid"]) for t in workers]
    if max(queued) > BUSY:
        # Other work had the cores: the workers sat in the run queue. The
        # sampler then keeps the `gil` row of a thread woken from the GIL's
        # futex until it has run (its schedstat has not moved), so part of
        # its time queued for a CPU reads as GIL wait (+0.07-0.2 seen at
        # load average 5-8 on 2 cores).
        pytest.skip(f"cores busy elsewhere: workers queued for a CPU {queued} of their time")
    rate = s["rate_hz"]
    for t in workers:
        truth = _off_cpu_share(s, t["tid"])
        sigma = math.sqrt(truth * (1 - truth) / max(1.0, t["time_s"] * rate))
        assert t["contention"] == pytest.approx(truth, abs=max(0.1, 0.02 + 4 * sigma)), workers
    time = sum(t["time_s"] for t in workers)
    wait = sum(t["wait_s"] for t in workers)
    truth = sum(_off_cpu_share(s, t["tid"]) * t["time_s"] for t in workers)
    assert wait / time == pytest.approx(truth / time, abs=0.05), (wait, truth, time)


@pytest.mark.integration
def test_two_cpu_threads_wait_for_the_gil_as_long_as_the_kernel_says(tmp_path: Path) -> None:
    run, out = _run(tmp_path, "switch", "2", "2", "0.02", rate=1000, priority=False)
    s = run.summary()
    workers = _workers(s)
    assert len(workers) == 2
    _check_against_the_kernel(s, workers)
    (p,) = s["gil"]["processes"]
    truth = json.loads(out)
    if p["source"] == "interpreter":
        # the interpreter's own counter against the hand-offs the target counted
        assert p["switches_per_s"] == pytest.approx(truth["switches_per_s"], rel=0.1), (p, truth)
    else:
        assert p["switches_per_s"] is None and p["held_s"] is None
    # the waits are GIL waits, not lock waits
    for t in s["threads"]:
        if t["tid"] != t["pid"]:
            assert t["time_by_wait"]["gil"] > 5 * t["time_by_wait"]["lock"]


@pytest.mark.integration
@pytest.mark.parametrize("rate", [100, 1000])
def test_four_cpu_threads_on_two_cores_at_100_hz_and_1_khz(tmp_path: Path, rate: int) -> None:
    # 0.55-0.70 on 2 cores, not 0.75: a thread handed the GIL may wait in the
    # run queue first, and that time is CPU contention, not GIL wait
    run, _ = _run(tmp_path, "threads", "4", "2", rate=rate, priority=False)
    s = run.summary()
    workers = _workers(s)
    assert len(workers) == 4
    _check_against_the_kernel(s, workers)
    (p,) = s["gil"]["processes"]
    assert p["contention"] == round(p["wait_s"] / p["thread_s"], 4)


@pytest.mark.integration
@pytest.mark.parametrize("rate", [100, 1000])
def test_threads_hashing_without_the_gil_do_not_contend_however_oversubscribed(
    tmp_path: Path, rate: int
) -> None:
    script = tmp_path / "hash.py"
    script.write_text(HASH)
    n = 2 * (os.cpu_count() or 1)
    run, _ = _run(tmp_path, str(n), "2", rate=rate, script=script)
    s = run.summary()
    workers = [t for t in s["threads"] if t["tid"] != t["pid"]]
    assert len(workers) == n
    # the CPUs are oversubscribed: the hashing threads spent a good part of
    # their time runnable, waiting for a CPU (~half with 2 threads per core;
    # one thread alone may have been lucky)
    queued = sum(t["run_delay_s"] for t in workers)
    assert queued > 0.2 * sum(sum(t["time_by_wait"].values()) for t in workers), workers
    for t in _workers(s):
        assert t["contention"] <= 0.05, _workers(s)
    (p,) = s["gil"]["processes"]
    assert p["contention"] <= 0.05, p


@pytest.mark.integration
def test_the_same_work_in_processes_does_not_contend(tmp_path: Path) -> None:
    run, _ = _run(tmp_path, "procs", "2", "2")
    s = run.summary()
    procs = s["gil"]["processes"]
    assert len(procs) == 3  # parent + 2 children, each its own GIL
    busy = [p for p in procs if p["thread_s"] > 1.5]
    assert len(busy) >= 2, procs
    for p in procs:
        assert p["contention"] < 0.02, procs


@pytest.mark.integration
def test_sleeping_threads_do_not_contend(tmp_path: Path) -> None:
    run, _ = _run(tmp_path, "sleep", "4", "2")
    s = run.summary()
    (p,) = s["gil"]["processes"]
    # A thread waking from sleep waits for the GIL only when another woke
    # within the same ~50 us: well under 1% of their time.
    assert p["contention"] < 0.01, p
    for t in s["threads"]:
        if t["tid"] != t["pid"]:
            assert t["time_by_wait"]["sleep"] > 1.5


@pytest.mark.integration
def test_a_thread_blocked_on_a_lock_is_lock_not_gil(tmp_path: Path) -> None:
    run, _ = _run(tmp_path, "lock", "1", "2")
    s = run.summary()
    (waiter,) = [t for t in s["threads"] if t["tid"] != t["pid"]]
    w = waiter["time_by_wait"]
    assert w["lock"] > 1.5, w
    assert w["gil"] < 0.05 * w["lock"], w


@pytest.mark.integration
def test_gil_classification_agrees_with_py_spy_owns_gil(tmp_path: Path) -> None:
    """py-spy reads the holder from the interpreter; we infer it from the kernel."""
    run, _ = _run(tmp_path, "threads", "2", "2.5", extra=("--dump-interval", "0.1"))
    th = classify_gil(run.threads, run.maps)
    st = run.stacks
    st = st[st["tid"] != st["pid"]]
    assert len(st) >= 10, "too few py-spy dumps to validate against"
    agree = total = 0
    for _, d in st.iterrows():
        win = th[
            (th["tid"] == d["tid"])
            & (th["t_ns"] >= d["t_ns"] - 2_000_000)
            & (th["t_ns"] <= d["end_ns"] + 2_000_000)
        ]
        if win.empty:
            continue
        waits = set(win["wait"].astype(str))
        total += 1
        # the owner ran in the window; a non-owner waited for the GIL in it
        agree += ("running" in waits) if d["owns_gil"] else ("gil" in waits)
    assert total >= 10
    assert agree / total >= 0.7, (agree, total)
    # lock is never what a CPU-bound worker waits in
    workers = th[th["tid"] != th["pid"]]
    assert (workers["wait"].astype(str) == "lock").mean() < 0.05


@pytest.mark.integration
def test_one_runs_gil_figures_are_the_same_in_summary_report_and_bench(tmp_path: Path) -> None:
    from circuit.analysis import bench as B
    from circuit.analysis.gil import run_gil
    from circuit.analysis.report import Table, run_document

    run, _ = _run(tmp_path, "threads", "4", "1.5")
    cli = subprocess.run(
        [sys.executable, "-m", "circuit", "summary", "--json", str(run.path)],
        capture_output=True,
        text=True,
        check=True,
    )
    gil = json.loads(cli.stdout)["gil"]
    (p,) = gil["processes"]
    assert p["contention"] > 0.3 and len(gil["threads"]) == 5  # a real figure, not 0 = 0
    assert run_gil(run) == gil  # what the plots and the export draw from
    # the report: one table row per process, the summary's numbers
    (sec,) = [x for x in run_document(run).sections if x.id == "gil"]
    (table,) = [b for b in sec.body if isinstance(b, Table)]
    (row,) = table.rows
    assert row[:3] == [p["pid"], p["source"], p["threads"]]
    assert row[5] == f"{p['contention']:.4f}" == f"{gil['contention']:.4f}"
    # the bench: the runs table's row, and the bench report's per-run figure
    summary = json.loads(cli.stdout)
    assert B.run_metrics(summary, {"pid": p["pid"]})["gil_contention"] == gil["contention"]
    results = pd.DataFrame(
        [{"workload": "w", "model": "threads", "tasks": 4, "run": str(run.path)}]
    )
    runs = B.per_run_waits(results)
    assert runs["gil_contention"].tolist() == [gil["contention"]]
    assert B.gil_vs_threads(runs)["gil_contention"].tolist() == [gil["contention"]]
