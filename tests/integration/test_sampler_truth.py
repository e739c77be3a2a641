"""circuit's figures against the target's own: a broken sampler fails here.

``truth_target.py`` runs under ``circuit run`` and measures itself: each
thread's context switches (``getrusage(RUSAGE_THREAD)``), CPU
(``time.thread_time_ns()``), run-queue delay (``/proc/thread-self/schedstat``),
and the numbers and kinds of the fds it holds.

Two kinds of check.  Over time: every row circuit wrote of a thread lies
between the thread's own readings around it, as the sampler's rules allow
(switch counts re-read at most every SLOW_COUNTER_NS, carried in between).
At the end: each thread takes a last reading and then sleeps past
SLOW_COUNTER_NS before blocking for good, so circuit's last row of it is read
after the reading: never below it, and above it by only what the thread did
after (an Event set, a sleep, a block, its exit).

Every case runs the target once (module-scoped) and checks it many ways:
the C tick at 100 Hz and 1 kHz, the Python tick, and the psutil backend
(switches and CPU only: it reads neither schedstat nor fd kinds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

import circuit
from circuit.tracer.backends.proc import SLOW_COUNTER_NS
from circuit.tracer.procfs import FD_KINDS
from tests.support.helpers import TARGETS

pytestmark = pytest.mark.integration

TARGET = TARGETS / "truth_target.py"
PY = sys.executable

# After its reading a thread sets an Event, sleeps, blocks on another Event
# and, once released, exits: 2-4 more voluntary switches measured, 0-3 more
# involuntary ones (preempted, or seen on its way out), over 30 runs.
SWITCHES_AFTER = 8
# What a thread runs after its reading (the same few lines): 0.1-0.25 ms measured.
CPU_AFTER_NS = 2_000_000
CPU_AFTER_SHARE = 0.02
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
# /proc/TID/schedstat of a thread running on another CPU is brought up to
# date at the scheduler's tick (CONFIG_HZ >= 100) or when it stops running.
SCHED_TICK_NS = 10_000_000
THREADS = ["spin", "sleep", "lock"]


@dataclass(frozen=True)
class Case:
    rate: int
    backend: str = "proc"
    python_tick: bool = False

    @property
    def tick(self) -> str:
        return "c" if self.backend == "proc" and not self.python_tick else "python"


CASES = {
    "c-100hz": Case(100),
    "c-1khz": Case(1000),
    "python-100hz": Case(100, python_tick=True),
    "psutil-100hz": Case(100, backend="psutil"),
}


@dataclass
class Traced:
    case: Case
    truth: dict[str, Any]
    run: Any

    def rows(self, name: str) -> pd.DataFrame:
        tid = self.truth["threads"][name]["tid"]
        rows = self.run.threads[self.run.threads.tid == tid]
        assert len(rows), f"circuit never sampled thread {name} (tid {tid})"
        return rows.sort_values("t_ns").reset_index(drop=True)

    def last_row(self, name: str) -> pd.Series:
        return self.rows(name).iloc[-1]

    def own(self, name: str) -> pd.DataFrame:
        """The thread's own readings over time, its last one included."""
        last = self.truth["threads"][name]
        points = [
            *self.truth["series"][name],
            [
                last["t_ns"],
                last["after_ns"],
                last["ctx_vol"],
                last["ctx_invol"],
                last["thread_time_ns"],
                last["run_delay_ns"],
            ],
        ]
        cols = ["t_ns", "after_ns", "ctx_vol", "ctx_invol", "cpu_ns", "run_delay_ns"]
        return pd.DataFrame(points, columns=cols)


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def traced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Traced:
    case = CASES[request.param]
    if not hasattr(os, "eventfd") or not hasattr(os, "pidfd_open"):
        pytest.skip("the target needs os.eventfd and os.pidfd_open (Python 3.10+ on Linux)")
    if case.backend == "psutil":
        pytest.importorskip("psutil")
    if case.tick == "c":
        pytest.importorskip("circuit.tracer.backends._fasttick", reason="the C tick is not built")
    out = tmp_path_factory.mktemp(request.param) / "run"
    env = dict(os.environ)
    env.pop("CIRCUIT_PYTHON_TICK", None)
    if case.python_tick:
        env["CIRCUIT_PYTHON_TICK"] = "1"
    r = subprocess.run(
        [
            *(PY, "-m", "circuit", "run", "-q", "--no-pyspy"),
            *("--rate", str(case.rate), "--backend", case.backend, "-o", str(out)),
            *("--", PY, str(TARGET)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    truth = json.loads(r.stdout.strip().splitlines()[-1])
    run = circuit.load(out)
    assert run.meta["tick"] == case.tick
    return Traced(case, truth, run)


def _needs_proc(t: Traced, what: str) -> None:
    if t.case.backend != "proc":
        pytest.skip(f"the {t.case.backend} backend does not read {what}")


def test_the_target_holds_every_kind_circuit_knows(traced: Traced) -> None:
    assert set(traced.truth["fds"]) == set(FD_KINDS)


def outside_own_readings(
    rows: pd.DataFrame, own: pd.DataFrame, col: str, lag_ns: int
) -> pd.DataFrame:
    """The rows of one thread whose ``col`` is not between its own readings.

    A row's figure was read during its sample, before the next sample began:
    it is at most the thread's first own reading begun after that.  And it is
    at least the thread's last own reading finished ``lag_ns`` before the
    last sample at which the thread was seen to have run (its CPU time or run
    delay moved): circuit reuses a row while the thread does not run, and a
    counter it carries is at most ``lag_ns`` older than the row.
    """
    t = rows.t_ns.to_numpy()
    ran = (rows.cpu_ns.diff() != 0) | (rows.run_delay_ns.diff() != 0)
    t_ran = rows.t_ns.where(ran).ffill().to_numpy()
    next_t = np.append(t[1:], np.iinfo(np.int64).max)
    own_v = own[col].to_numpy()
    before = np.searchsorted(own.after_ns.to_numpy(), t_ran - lag_ns, side="right") - 1
    after = np.searchsorted(own.t_ns.to_numpy(), next_t, side="left")
    low = np.where(before >= 0, own_v[np.maximum(before, 0)], np.iinfo(np.int64).min)
    high = np.where(after < len(own_v), own_v[np.minimum(after, len(own_v) - 1)], np.inf)
    v = rows[col].to_numpy()
    bad = (v < low) | (v > high)
    return rows.assign(low=low, high=high)[bad][["t_ns", col, "low", "high"]]


@pytest.mark.parametrize("name", THREADS)
def test_own_readings_never_go_back(traced: Traced, name: str) -> None:
    # (else the bounds below mean nothing)
    own = traced.own(name)
    assert (own.diff().dropna() >= 0).all().all()


@pytest.mark.parametrize("col", ["ctx_vol", "ctx_invol"])
@pytest.mark.parametrize("name", THREADS)
def test_switches_follow_the_thread_over_time(traced: Traced, name: str, col: str) -> None:
    bad = outside_own_readings(traced.rows(name), traced.own(name), col, SLOW_COUNTER_NS)
    assert bad.empty, bad.head(10)


@pytest.mark.parametrize("col", ["cpu_ns", "run_delay_ns"])
@pytest.mark.parametrize("name", THREADS)
def test_schedstat_follows_the_thread_over_time(traced: Traced, name: str, col: str) -> None:
    _needs_proc(traced, "schedstat")
    bad = outside_own_readings(traced.rows(name), traced.own(name), col, SCHED_TICK_NS)
    assert bad.empty, bad.head(10)


@pytest.mark.parametrize("name", THREADS)
def test_context_switches_match_the_threads_own(traced: Traced, name: str) -> None:
    own = traced.truth["threads"][name]
    row = traced.last_row(name)
    for col in ("ctx_vol", "ctx_invol"):
        assert own[col] <= row[col] <= own[col] + SWITCHES_AFTER, (col, own[col], row[col])


def test_the_sleeper_switched_often(traced: Traced) -> None:
    # Else the switch checks could not tell a frozen count from a live one.
    own = traced.own("sleep")
    if len(own) < 20:
        pytest.skip(f"the sleeper took {len(own)} readings of its own: too few to count on")
    assert own.ctx_vol.iloc[-1] - own.ctx_vol.iloc[0] >= 20, own


@pytest.mark.parametrize("name", THREADS)
def test_cpu_matches_thread_time(traced: Traced, name: str) -> None:
    own = traced.truth["threads"][name]["thread_time_ns"]
    got = traced.last_row(name).cpu_ns
    # /proc backend: schedstat's ns, read after the thread's own reading.
    # psutil: user + system in clock ticks, each cut down to a whole tick.
    low = own if traced.case.backend == "proc" else own - 2 * TICK_NS
    assert low <= got <= own * (1 + CPU_AFTER_SHARE) + CPU_AFTER_NS, (own, got)


@pytest.mark.parametrize("name", THREADS)
def test_user_and_system_match_rusage(traced: Traced, name: str) -> None:
    own = traced.truth["threads"][name]
    row = traced.last_row(name)
    got = row.user_ns + row.system_ns
    # /proc's stat and getrusage split the same CPU time; stat counts whole
    # clock ticks, each of the two cut down by less than one.
    low = own["rusage_cpu_ns"] - 2 * TICK_NS
    high = own["rusage_cpu_ns"] * (1 + CPU_AFTER_SHARE) + CPU_AFTER_NS
    assert low <= got <= high, (own["rusage_cpu_ns"], got)


@pytest.mark.parametrize("name", THREADS)
def test_run_delay_matches_schedstat(traced: Traced, name: str) -> None:
    _needs_proc(traced, "schedstat")
    own = traced.truth["threads"][name]
    rows = traced.rows(name)
    row = rows.iloc[-1]
    # Not less than the thread's own, and no more than the time that passed
    # until the sample after the last one at which it ran: a busy machine
    # makes each wake-up after the reading wait for a CPU.
    ran = rows[(rows.cpu_ns.diff() != 0) | (rows.run_delay_ns.diff() != 0)].index[-1]
    until = rows.t_ns.iloc[ran + 1] if ran + 1 < len(rows) else rows.t_ns.iloc[-1] + 10**9
    assert own["run_delay_ns"] <= row.run_delay_ns <= own["run_delay_ns"] + until - own["t_ns"]


def test_counters_never_go_back(traced: Traced) -> None:
    tids = {t["tid"] for t in traced.truth["threads"].values()}
    th = traced.run.threads[traced.run.threads.tid.isin(tids)].sort_values(["tid", "t_ns"])
    cols = ["ctx_vol", "ctx_invol", "cpu_ns", "user_ns", "system_ns"]
    if traced.case.backend == "proc":
        cols.append("run_delay_ns")
    steps = th.groupby("tid")[cols].diff().dropna()
    assert (steps >= 0).all().all(), steps[(steps < 0).any(axis=1)]


def test_every_fd_opened_is_seen_with_its_kind(traced: Traced) -> None:
    _needs_proc(traced, "fd kinds")
    fds = traced.run.fds
    opened = fds[(fds.pid == traced.truth["pid"]) & (fds.event == "open")]
    wrong = {}
    for kind, numbers in traced.truth["fds"].items():
        for fd, target in zip(numbers, traced.truth["targets"][kind], strict=True):
            seen = opened[(opened.fd == fd) & (opened.target == target)]
            if set(seen.kind) != {kind}:
                wrong[f"{kind} fd {fd} ({target})"] = sorted(set(seen.kind))
    assert not wrong


def test_process_rows_count_every_kind(traced: Traced) -> None:
    _needs_proc(traced, "fd kinds")
    procs = traced.run.processes
    rows = procs[procs.pid == traced.truth["pid"]].sort_values("t_ns")
    # A row's counts are read during its sample: before the next one begins.
    read_by = rows.t_ns.shift(-1, fill_value=np.iinfo(np.int64).max)
    rows = rows[
        (rows.t_ns >= traced.truth["fds_opened_ns"]) & (read_by < traced.truth["fds_closing_ns"])
    ]
    held = pd.concat(
        [rows[f"fds_{kind}"] >= len(fds) for kind, fds in traced.truth["fds"].items()], axis=1
    ).all(axis=1)
    assert held.any(), rows.filter(like="fds_").max()
    # Once seen, counted at every sample until the target closes them.
    since = rows[held.cumsum() > 0]
    short = {
        kind: int((since[f"fds_{kind}"] < len(fds)).sum())
        for kind, fds in traced.truth["fds"].items()
    }
    assert not any(short.values()), short
    assert len(since) >= 10
