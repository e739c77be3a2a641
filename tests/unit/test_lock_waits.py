"""The lock rows reduced thread by thread (findings/lock_waits.py) give the
answers the lock-contention finding used to take from the rows: the
dump ``Evidence.stack_of`` picks, the waiters' count at one sample, the
waits' sums; and batches of whole threads add up to all rows at once."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from circuit.analysis.findings.base import Evidence, wait_intervals
from circuit.analysis.findings.lock_waits import merge, of_frame


def _stacks(rng: random.Random, pids: list[int], tids: list[int], n: int) -> pd.DataFrame:
    rows = []
    for i in range(n):
        t = rng.randint(0, 2_000)
        rows.append(
            {
                "pid": rng.choice(pids),
                "tid": rng.choice(tids),
                "t_ns": t,
                "end_ns": t + rng.randint(1, 30),
                "frames": []
                if rng.random() < 0.1
                else [{"name": f"f{i}", "file": "x.py", "line": i}],
                "owns_gil": False,
            }
        )
    return pd.DataFrame(rows)


def _samples(rng: random.Random, pids: list[int], tids: list[int]) -> pd.DataFrame:
    """Thread samples on a shared grid, tiling each thread's time (a sample
    lasts until the next), lock waits on two addresses broken by other
    waits; then some rows dropped, as a frame of kept rows drops them."""
    rows = []
    times = sorted(rng.sample(range(0, 2_000), 200))
    for pid in pids:
        for tid in tids:
            for i, t in enumerate(times):
                dt = times[i + 1] - t if i + 1 < len(times) else 10
                wait = rng.choice(("lock", "lock", "lock", "running", "poll"))
                rows.append((pid, tid, t, dt, wait, rng.choice((0xA0, 0xB0))))
    rows = [r for r in rows if rng.random() < 0.9]
    df = pd.DataFrame(rows, columns=["pid", "tid", "t_ns", "dt_ns", "wait", "arg0"])
    df["wait"] = df["wait"].astype("category")
    return df


@pytest.mark.parametrize("seed", range(12))
def test_the_dump_picked_is_stack_ofs(seed: int) -> None:
    rng = random.Random(seed)
    s = _samples(rng, [1], [11, 12])
    stacks = _stacks(rng, [1], [11, 12], 40)
    ev = Evidence({"start_ns": 0, "rate_hz_achieved": 1e8}, s, s.iloc[:0], stacks=stacks)
    lw = of_frame(s, stacks)
    iv = wait_intervals(s, ("lock",))
    for (pid, addr, tid), frames in lw.frames.items():
        w = iv[(iv["pid"] == pid) & (iv["arg0"] == addr) & (iv["tid"] == tid)]
        spans = list(zip(w["start_ns"], w["end_ns"], strict=True))
        assert frames == ev.stack_of(pid, tid, spans), (pid, addr, tid)
    assert lw.frames  # (the seeds give dumps of the waiting threads)


@pytest.mark.parametrize("seed", range(6))
def test_counts_and_sums_are_the_rows_and_batches_add_up(seed: int) -> None:
    rng = random.Random(100 + seed)
    s = _samples(rng, [1, 2], [11, 12, 13])
    lw = of_frame(s, None)
    lock = s[s["wait"] == "lock"]
    want = lock.groupby(["pid", "arg0", "t_ns"])["tid"].nunique().groupby(level=[0, 1]).max()
    assert lw.most_waiting() == {(int(p), int(a)): int(k) for (p, a), k in want.items()}
    iv = wait_intervals(s, ("lock",))
    g = iv.groupby(["pid", "arg0", "tid"])["dur_ns"]
    assert (lw.triples["dur_ns"].to_numpy() == g.sum().to_numpy()).all()
    assert (lw.triples["waits"].to_numpy() == g.size().to_numpy()).all()
    assert (lw.triples["longest_ns"].to_numpy() == g.max().to_numpy()).all()
    # batches of whole threads, merged
    key = s["pid"] * 100 + s["tid"]
    parts = [of_frame(s[key == k], None) for k in reversed(key.unique())]
    m = merge(parts)
    pd.testing.assert_frame_equal(m.triples, lw.triples)
    assert m.most_waiting() == lw.most_waiting()


def test_a_run_without_lock_rows_has_none() -> None:
    s = pd.DataFrame(
        {"pid": [1], "tid": [1], "t_ns": [0], "dt_ns": [10], "wait": ["poll"], "arg0": [3]}
    )
    assert of_frame(s, None).empty and of_frame(s.iloc[:0], None).empty
    assert np.all(merge([]).triples.index.names == ["pid", "addr", "tid"])
