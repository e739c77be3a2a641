"""Simulated threads with a known GIL truth, sampled like the tracer samples.

A scenario is each thread's state over time as segments (start_ns, state)
and the GIL's holder over time.  States: ``hold`` (runs Python, holds the
GIL), ``free`` (runs C code without the GIL), ``queued`` (runnable, waiting
for a CPU), ``wait`` (asleep on the GIL's futex), ``sleep``, ``lock``.
Sampling gives the frames the analysis reads: a ``threads`` table (wait
reason ``running`` for the first three states, ``gil``, ``sleep``, ``lock``;
cumulative CPU and run delay) and a ``gil`` table (locked, holder, the
interpreter's switch counter), at jittered times like a real sampler's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from circuit.tracer.schema import GIL_FIELDS, THREAD_FIELDS

MS = 1_000_000
WAIT = {"hold": "running", "free": "running", "queued": "running", "wait": "gil"}
WAIT.update(sleep="sleep", lock="lock")


@dataclass
class Sim:
    end_ns: int
    pid: int = 1
    segs: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    gil: list[tuple[int, int]] = field(default_factory=list)  # (start_ns, holder; -1 free)

    def truth(self, tid: int, *states: str) -> float:
        """Seconds ``tid`` spent in any of ``states``."""
        s = self.segs[tid]
        total = 0
        for (a, st), (b, _) in zip(s, [*s[1:], (self.end_ns, "")], strict=True):
            total += (b - a) if st in states else 0
        return total / 1e9

    def sample(
        self, period_ns: int, seed: int = 0, gil_rows: bool = True
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        rng = np.random.default_rng(seed)
        n = self.end_ns // period_ns
        times = np.arange(n) * period_ns + rng.integers(0, period_ns // 4 + 1, n)
        rows = []
        for tid, s in self.segs.items():
            starts = np.array([a for a, _ in s], dtype=np.int64)
            states = [st for _, st in s]
            ends = np.r_[starts[1:], self.end_ns]
            on_cpu = np.array([st in ("hold", "free") for st in states])
            queued = np.array([st == "queued" for st in states])
            cum_cpu = np.r_[0, np.cumsum((ends - starts) * on_cpu)]
            cum_q = np.r_[0, np.cumsum((ends - starts) * queued)]
            t = times[times >= starts[0]]
            i = np.searchsorted(starts, t, side="right") - 1
            cpu = cum_cpu[i] + (t - starts[i]) * on_cpu[i]
            delay = cum_q[i] + (t - starts[i]) * queued[i]
            for tt, k, c, d in zip(t, i, cpu, delay, strict=True):
                w = WAIT[states[k]]
                state = "R" if w == "running" else "S"
                rows.append((tt, self.pid, tid, "t", state, w, 202, 0, "", int(c), 0, int(c)))
                rows[-1] += (int(d), 0, 0, 0)
        th = pd.DataFrame(rows, columns=[c for c, _ in THREAD_FIELDS])
        th = th.sort_values(["pid", "tid", "t_ns"]).reset_index(drop=True)
        th["wait"] = th["wait"].astype("category")
        if not gil_rows or not self.gil:
            return th, pd.DataFrame(columns=[c for c, _ in GIL_FIELDS])
        g0 = np.array([a for a, _ in self.gil], dtype=np.int64)
        holder = np.array([h for _, h in self.gil], dtype=np.int64)
        # the interpreter counts a switch when a thread other than the last
        # holder takes the GIL
        last, count, counts, lasts = -1, 0, [], []
        for h in holder:
            if h > 0 and h != last:
                count += 1
                last = h
            counts.append(count)
            lasts.append(last)
        i = np.searchsorted(g0, times, side="right") - 1
        ok = i >= 0
        gil = pd.DataFrame(
            {
                "t_ns": times[ok],
                "pid": self.pid,
                "locked": (holder[i[ok]] > 0).astype(np.int8),
                "holder": np.maximum(np.array(lasts)[i[ok]], 0),
                "switches": np.array(counts)[i[ok]],
            }
        )
        return th, gil


def turns(n: int, seconds: float, mean_hold_ms: float = 5.0, seed: int = 1) -> Sim:
    """``n`` threads running Python: one holds the GIL, the others wait for it;
    holds last 0.5-1.5x ``mean_hold_ms`` (no two alike: nothing aliases with
    the sampling period)."""
    rng = np.random.default_rng(seed)
    end = int(seconds * 1e9)
    sim = Sim(end)
    tids = [101 + k for k in range(n)]
    sim.segs = {t: [] for t in tids}
    t, holder = 0, tids[0]
    while t < end:
        for k in tids:
            sim.segs[k].append((t, "hold" if k == holder else "wait"))
        sim.gil.append((t, holder))
        t += int(rng.uniform(0.5, 1.5) * mean_hold_ms * MS)
        holder = int(rng.choice([k for k in tids if k != holder])) if n > 1 else holder
    return sim


def hashing(n: int, cores: int, seconds: float, seed: int = 2) -> Sim:
    """``n`` threads hashing with the GIL released, on ``cores`` CPUs: in each
    1-4 ms slice the scheduler runs ``cores`` of them and queues the rest;
    between buffers a running thread holds the GIL for 50 us.  Nobody ever
    waits for the GIL."""
    rng = np.random.default_rng(seed)
    end = int(seconds * 1e9)
    sim = Sim(end)
    tids = [201 + k for k in range(n)]
    sim.segs = {t: [] for t in tids}
    t = 0
    while t < end:
        running = set(rng.choice(tids, size=min(cores, n), replace=False).tolist())
        for k in tids:
            sim.segs[k].append((t, "free" if k in running else "queued"))
        dur = int(rng.uniform(1, 4) * MS)
        if rng.random() < 0.2:  # a buffer done: Python for a moment
            k = int(min(running))
            sim.segs[k][-1] = (t, "hold")
            sim.segs[k].append((t + 50_000, "free"))
            sim.gil += [(t, k), (t + 50_000, -1)]
        elif not sim.gil or sim.gil[-1][1] != -1:
            sim.gil.append((t, -1))
        t += dur
    return sim


def with_idle(sim: Sim, tid: int, state: str, cpu_ms: float = 0.0) -> Sim:
    """Add a thread that spends the whole run in ``state`` (``sleep``,
    ``lock``), after ``cpu_ms`` of Python at the start (while nobody else
    holds the GIL there: the scenario's first hold starts later)."""
    start = int(cpu_ms * MS)
    sim.segs[tid] = [(0, "hold"), (start, state)] if start else [(0, state)]
    return sim
