"""What dies between samples, against the target's own measurements.

``exits_target.py`` runs under ``circuit run`` and measures itself:

* ``children``: 50 children of ~40 ms CPU each, all exited before the
  parent reaps them at once; the oracle is the parent's ``os.times()``
  children figure (the kernel's own sum of what it credited the parent).
  circuit's ``children_cpu_s`` must be within 2% of it, from either source:
  the exit records (root) or the parent's cutime/cstime.  2%: os.times()
  and cutime count in clock ticks (10 ms of ~2 s: 0.5%); an exit record
  lacks what the child ran since the scheduler last accounted it (these
  children read their own CPU clock in their loop, which accounts it).
* ``threads``: 2,000 threads of ~2 ms CPU each, 20 at a time; each reads its
  own switch counts and schedstat just before it exits.  With the exit
  records every one has a summary row with CPU > 0 (≥ 99% asked; the ones
  lost are those the kernel dropped on overflow, which the run reports),
  and its final counts are never below its own last reading.  Without
  them, the summary's ``threads_missed_at_most`` is never below the truth
  (threads the target started that have no row) and above it by no more
  than the pids the rest of the machine took meanwhile (measured here
  around the run, /proc/loadavg).

The exit-record cases need root (CAP_NET_ADMIN) and skip without it; the
others run everywhere.  Each target runs on this venv's Python and on 3.10
and 3.13 where present.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from circuit.tracer.exits import ExitListener
from tests.support.helpers import CIRCUIT, PY, TARGETS, interpreter

pytestmark = pytest.mark.integration

TARGET = str(TARGETS / "exits_target.py")
CHILDREN = 50
THREADS = 2000
PYTHONS = [None, 10, 13]  # None: this venv's interpreter
TEARDOWN_S = 50e-6


@functools.cache
def can_listen() -> bool:
    got = ExitListener.open()
    if isinstance(got, ExitListener):
        got.close()
        return True
    return False


def _last_pid() -> int:
    with open("/proc/loadavg") as f:
        return int(f.read().split()[4])


def _pid_max() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())


def traced(tmp: Path, mode: str, n: int, exits: bool, minor: int | None) -> dict[str, Any]:
    """Run the target under `circuit run`; its JSON, circuit's summary and meta."""
    if exits and not can_listen():
        pytest.skip("exit records need root (CAP_NET_ADMIN) and CONFIG_TASKSTATS")
    exe = PY if minor is None else interpreter(minor)
    out, res = tmp / f"run-{mode}-{exits}-{minor}", tmp / f"target-{mode}-{exits}-{minor}.json"
    env = {**os.environ, "CIRCUIT_EXITS": "1" if exits else "0"}
    before = _last_pid()
    p = subprocess.run(
        [*CIRCUIT, "run", "-q", "--no-pyspy", "-o", str(out), "--",
         exe, TARGET, mode, str(n), str(res)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    after = _last_pid()
    assert p.returncode == 0, p.stderr
    s = subprocess.run(
        [*CIRCUIT, "summary", "--json", str(out)], capture_output=True, text=True, timeout=60
    )
    assert s.returncode == 0, s.stderr
    meta = json.loads((out / "meta.json").read_text())
    return {
        "target": json.loads(res.read_text()),
        "summary": json.loads(s.stdout),
        "meta": meta,
        # pids wrap at pid_max: one wrap during the run is counted right
        "pids_around": (after - before) % _pid_max(),
    }


@pytest.mark.parametrize("minor", PYTHONS)
@pytest.mark.parametrize("exits", [True, False], ids=["exit-records", "cutime"])
def test_reaped_children_cpu_matches_the_parents_own_figure(tmp_path, exits, minor):
    r = traced(tmp_path, "children", CHILDREN, exits, minor)
    truth = r["target"]["children_cpu_s"]
    (parent,) = [p for p in r["summary"]["processes"] if p["pid"] == r["target"]["pid"]]
    assert parent["children_cpu_source"] == ("exits" if exits else "reaped")
    assert parent["children_cpu_s"] == pytest.approx(truth, rel=0.02)


@pytest.fixture(scope="module", params=PYTHONS)
def threads_run(request, tmp_path_factory) -> dict[str, Any]:
    n = THREADS if request.param is None else THREADS // 4
    tmp = tmp_path_factory.mktemp(f"threads{request.param}")
    return {"n": n, **traced(tmp, "threads", n, True, request.param)}


def _rows(r: dict[str, Any]) -> dict[int, dict[str, Any]]:
    pid = r["target"]["pid"]
    return {t["tid"]: t for t in r["summary"]["threads"] if t["pid"] == pid}


def test_every_short_thread_has_a_row_with_cpu(threads_run):
    truth = threads_run["target"]["threads"]
    assert len(truth) == threads_run["n"]
    rows = _rows(threads_run)
    with_cpu = [t for t in truth if t["tid"] in rows and rows[t["tid"]]["cpu_s"] > 0]
    assert len(with_cpu) >= 0.99 * len(truth), threads_run["meta"]["exits"]
    only = sum(1 for t in truth if rows.get(t["tid"], {}).get("seen_only_at_exit"))
    assert only > 0  # 2 ms threads at 100 Hz: sampling alone misses many
    assert threads_run["summary"]["threads_seen_only_at_exit"] >= only


def test_final_counts_are_never_below_the_threads_own_last_reading(threads_run):
    rows = _rows(threads_run)
    below = []
    for t in threads_run["target"]["threads"]:
        row = rows.get(t["tid"])
        if row is None:
            continue  # (counted by the test above)
        if (
            row["ctx_voluntary"] < t["ctx_vol"]
            or row["ctx_involuntary"] < t["ctx_invol"]
            or row["cpu_s"] * 1e9 < t["sched_cpu_ns"] - 1000  # (summary rounds to µs)
            or row["run_delay_s"] * 1e9 < t["sched_delay_ns"] - 1000
        ):
            below.append((t, row))
    assert not below, below[:3]


def test_without_exit_records_the_missed_count_bounds_the_truth(tmp_path):
    r = traced(tmp_path, "threads", THREADS, False, None)
    truth = r["target"]["threads"]
    rows = _rows(r)
    missed = sum(1 for t in truth if t["tid"] not in rows)
    reported = r["summary"]["threads_missed_at_most"]
    assert r["summary"]["threads_seen_only_at_exit"] == 0
    # The pids others took during the run: those handed out around it, less
    # the target's own (its process and its threads).
    others = r["pids_around"] - (len(truth) + 1)
    assert missed <= reported <= missed + others, (missed, reported, others)
    # The CPU of the threads never seen: the process's own counter holds it.
    # Slack: the counter's 10 ms ticks and up to 20 ms of lag; the CPU seen
    # threads ran after their last row (the oracle says how much); and each
    # thread's teardown after its own last reading (Python's thread exit,
    # then the kernel's), which no reading of the thread's covers: ~15 µs
    # a thread here, TEARDOWN_S allowed.
    unseen = sum(t["thread_time_ns"] for t in truth if t["tid"] not in rows) / 1e9
    tails = sum(max(t["thread_time_ns"] / 1e9 - rows[t["tid"]]["cpu_s"], 0.0)
                for t in truth if t["tid"] in rows)  # fmt: skip
    (p,) = [p for p in r["summary"]["processes"] if p["pid"] == r["target"]["pid"]]
    got = p["cpu_in_unseen_threads_s"]
    slack = 0.03 + TEARDOWN_S * len(truth)
    assert unseen - 0.03 <= got <= unseen + tails + slack, (unseen, tails, got)
