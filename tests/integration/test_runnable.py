"""``runnable``: time queued for a CPU, against the threads' own schedstat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import circuit
from circuit.analysis.runnable import split_rows
from circuit.analysis.summary import period_ns, with_durations
from tests.support.helpers import TARGETS

TARGET = TARGETS / "runnable_target.py"
pytestmark = pytest.mark.integration


def _run(tmp_path: Path, rate: int, *args: str, tick: str = "c") -> tuple:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "circuit", "run", "-q", "-o", str(out), "--force"]
    cmd += ["--rate", str(rate), "--no-fds", "--", sys.executable, str(TARGET), *args]
    env = {k: v for k, v in os.environ.items() if k != "CIRCUIT_PYTHON_TICK"}
    if tick == "python":  # the Python tick alone reads every row (the C tick is off)
        env["CIRCUIT_PYTHON_TICK"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    own = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return circuit.load(out), own


def _window(run, w: dict) -> tuple[dict[str, float], float]:
    """Seconds per wait reason circuit gives the worker's thread between
    the worker's own two readings, and the longest sampling interval near
    either end (how far circuit can place time from where it happened)."""
    df = split_rows(with_durations(run.threads, period_ns(run.meta)))
    df = df[df["tid"] == w["tid"]]
    t = df["t_ns"].to_numpy()
    end = t + df["dt_ns"].to_numpy()
    overlap = np.clip(np.minimum(end, w["t1_ns"]) - np.maximum(t, w["t0_ns"]), 0, None)
    out = (
        df.assign(s=overlap / 1e9).groupby(df["wait"].astype(str), observed=True)["s"].sum()
    ).to_dict()
    samples = np.sort(run.threads.loc[run.threads["tid"] == w["tid"], "t_ns"].to_numpy())
    gaps = np.diff(samples)
    near = (np.abs(samples[1:] - w["t0_ns"]) < 0.2e9) | (np.abs(samples[1:] - w["t1_ns"]) < 0.2e9)
    worst = float(gaps[near].max()) / 1e9 if near.any() else 0.0
    if samples[0] > w["t0_ns"]:  # seen after the worker started: nothing before counts
        worst += (samples[0] - w["t0_ns"]) / 1e9
    return out, worst


@pytest.mark.parametrize(
    ("rate", "tick"), [(100, "c"), (1000, "c"), (100, "python")], ids=["100hz", "1khz", "py-100hz"]
)
def test_a_pool_of_four_on_two_cores_is_runnable_as_long_as_it_queued(
    tmp_path: Path, rate: int, tick: str
) -> None:
    """4 CPU-bound processes on 2 cores queue about half their time. circuit's
    ``runnable`` for each worker, over the span the worker measured itself,
    must equal the worker's own schedstat run delay over that span: the
    total is the same counter, so they differ only by where circuit places
    the delay in time (within a sampling interval of each end; farther when
    a wait spans several) plus 0.02 of the span. ``running`` against the
    worker's own CPU the same way. Under either tick: each reads run delay
    on its own path."""
    if (os.cpu_count() or 1) > 2:
        pytest.skip("needs at most 2 CPUs to oversubscribe with 4 workers")
    run, own = _run(tmp_path, rate, "pool", "4", "2", tick=tick)
    assert run.meta["tick"] == tick, run.meta
    assert len(own) == 4
    for w in own:
        life = w["life_s"]
        assert w["run_delay_s"] / life > 0.3, w  # the oversubscription is real
        got, edge = _window(run, w)
        tol = 0.02 * life + 2 * edge
        assert got["runnable"] == pytest.approx(w["run_delay_s"], abs=tol), (got, w, edge)
        assert got["running"] == pytest.approx(w["cpu_s"], abs=tol), (got, w, edge)
    for t in run.summary()["threads"]:
        if t["tid"] in {w["tid"] for w in own}:
            assert t["time_by_wait"]["runnable"] >= 0.3 * sum(t["time_by_wait"].values()), t


@pytest.mark.parametrize("rate", [100, 1000])
def test_sleepers_on_an_idle_machine_are_hardly_ever_runnable(tmp_path: Path, rate: int) -> None:
    """4 threads waking every ~1 ms: each wake-up queues for microseconds,
    so ``runnable`` is well under 5% of their time, and it equals their own
    run delay (the same counter; placement error as above)."""
    run, own = _run(tmp_path, rate, "sleepers", "4", "2")
    assert len(own) == 4
    if max(w["run_delay_s"] / w["life_s"] for w in own) > 0.05:
        pytest.skip(f"the machine is busy: the sleepers queued {[w['run_delay_s'] for w in own]}")
    by_tid = {t["tid"]: t["time_by_wait"] for t in run.summary()["threads"]}
    for w in own:
        t = by_tid[w["tid"]]
        assert t["runnable"] < 0.05 * sum(t.values()), t
        assert t["sleep"] > 0.5 * sum(t.values()), t
        got, edge = _window(run, w)
        tol = 0.02 * w["life_s"] + 2 * edge
        assert got.get("runnable", 0.0) == pytest.approx(w["run_delay_s"], abs=tol), (got, w)
