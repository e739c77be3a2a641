"""``cpu-oversubscribed``: more of the program's threads wanted a CPU than
the machine has, and they queued for one.

Rule (docs/findings.md): in bins of 0.25 s, the traced threads' demand is
(time running + time runnable) / bin width, in cores: a busy thread counts
one whether it ran or queued, so the demand is the program's own, whatever
else loads the machine. Bins where it exceeds the CPUs by at least half a
core are oversubscribed. Reported when the threads spent at least 0.1 s
runnable (schedstat run delay) in those bins; severity from the share of the
time they wanted a CPU that they spent queued, ``info`` when the bins add
up to less than 1 s (a burst, such as a pool starting). A program that never asked for
more than the CPUs but still queued (the machine busy with other work) gets
one ``info`` finding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..cols import strs
from .base import LONG_WAIT_S, Evidence, Finding, culprit_line, severity_of, spans_of, stack_lines

KIND = "cpu-oversubscribed"
BIN_NS = 250_000_000
OVER_CORES = 0.5
WARNING, CRITICAL = 0.2, 0.5
OTHER_LOAD_SHARE = 0.2
# Oversubscribed for less than this in all (a process pool starting: the
# parent, its manager thread and the new workers all busy at once) is info.
MIN_OVER_NS = 1_000_000_000


def find(ev: Evidence) -> list[Finding]:
    if not ev.cpus:
        return []
    bins = ev.cpu_bins
    if bins is None or not bins["queued_rows"]:
        return []
    lo, hi, mid = ev.span
    running, runnable = _padded(bins, (mid - lo) // BIN_NS + 1)
    nb = len(running)
    width = np.full(nb, BIN_NS, dtype=np.float64)
    width[-1] = max(hi - lo - (nb - 1) * BIN_NS, 1)
    demand = (running + runnable) / width
    full = width >= BIN_NS / 2  # a short last bin says little
    over = full & (demand > ev.cpus + OVER_CORES)
    q = ev.queued
    if over.any():
        lost = float(runnable[over].sum()) / 1e9
        if lost < LONG_WAIT_S:
            return []
        share = float(runnable[over].sum() / (running[over] + runnable[over]).sum())
        return [
            _finding(
                ev,
                q[over[q["bin"].to_numpy()]],
                severity_of(share, WARNING, CRITICAL)
                if over.sum() * BIN_NS >= MIN_OVER_NS
                else "info",
                share,
                float((running[over] + runnable[over]).sum() / width[over].sum()),
                int(over.sum()),
                lo,
                over,
                other_load=False,
            )
        ]
    lost_ns = runnable.sum()
    share = float(lost_ns / max(running.sum() + lost_ns, 1))
    if lost_ns / 1e9 < 2 * LONG_WAIT_S or share < OTHER_LOAD_SHARE:
        return []
    busy = full & (runnable > 0)
    mean = float((running[busy] + runnable[busy]).sum() / width[busy].sum()) if busy.any() else 0.0
    return [_finding(ev, q, "info", share, mean, int(busy.sum()), lo, busy, True)]


def _padded(bins: dict, nb: int) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for k in ("running", "runnable"):
        v = np.zeros(nb, dtype=np.float64)
        v[: min(nb, len(bins[k]))] = bins[k][:nb]
        out.append(v)
    return out[0], out[1]


def bins_of(s: pd.DataFrame, lo: int) -> tuple[dict, pd.DataFrame]:
    """CPU demand in 0.25 s bins from ``lo``, from split samples ``s``:
    ns running and queued per bin, the count of queued rows, and the queued
    ns per (pid, tid, bin)."""
    wait = strs(s["wait"])
    run = wait == "running"
    queued = wait == "runnable"
    t = s["t_ns"].to_numpy().astype(np.int64)
    dt = s["dt_ns"].to_numpy().astype(np.int64)
    b = (t + dt // 2 - lo) // BIN_NS
    nb = int(b.max()) + 1 if len(b) else 0
    bins = {
        "running": np.bincount(b, weights=np.where(run, dt, 0), minlength=nb),
        "runnable": np.bincount(b, weights=np.where(queued, dt, 0), minlength=nb),
        "queued_rows": int(queued.sum()),
    }
    q = pd.DataFrame(
        {
            "pid": s["pid"].to_numpy()[queued],
            "tid": s["tid"].to_numpy()[queued],
            "bin": b[queued],
            "dt_ns": dt[queued],
        }
    )
    return bins, q.groupby(["pid", "tid", "bin"], as_index=False)["dt_ns"].sum()


def _finding(
    ev: Evidence,
    rows: pd.DataFrame,
    severity: str,
    share: float,
    demand: float,
    bins: int,
    lo: int,
    which: np.ndarray,
    other_load: bool,
) -> Finding:
    per = rows.groupby(["pid", "tid"])["dt_ns"].sum().sort_values(ascending=False)
    pid, tid = (int(x) for x in per.index[0])
    by_pid = rows.groupby("pid")["dt_ns"].sum().sort_values(ascending=False)
    lost = float(rows["dt_ns"].sum()) / 1e9
    mine = ev.queued_rows(pid, tid)
    if not other_load:  # the queued rows in the oversubscribed bins
        mb = (mine["t_ns"].to_numpy() + mine["dt_ns"].to_numpy() // 2 - lo) // BIN_NS
        mine = mine[which[np.minimum(mb, len(which) - 1)]]
    spans = spans_of(mine.assign(start_ns=mine["t_ns"], end_ns=mine["t_ns"] + mine["dt_ns"]))
    frames = ev.stack_of(pid, tid, spans)
    idx = np.flatnonzero(which)
    start = lo + int(idx.min()) * BIN_NS
    end = lo + (int(idx.max()) + 1) * BIN_NS
    if other_load:
        title = (
            f"threads queued {lost:.2f} s for a CPU ({100 * share:.0f}% of the time they "
            f"wanted one) while asking for at most {demand:.1f} of {ev.cpus} CPUs: "
            "other work on the machine took them"
        )
    else:
        title = (
            f"CPU oversubscribed: {demand:.1f} threads wanted the {ev.cpus} CPUs; "
            f"{len(per)} threads queued {lost:.2f} s ({100 * share:.0f}% of the time "
            "they wanted a CPU)"
        )
    return Finding(
        kind=KIND,
        severity=severity,
        title=title,
        start_s=ev.rel(start),
        duration_s=(end - start) / 1e9,
        pid=pid,
        tid=tid,
        thread_name=ev.name(pid, tid),
        evidence={
            "runnable_s": lost,
            "share": share,
            "demand_cores": demand,
            "cpus": ev.cpus,
            "threads_waiting": len(per),
            "processes_waiting": len(by_pid),
            "bins": bins,
        },
        stack=stack_lines(frames),
        culprit=culprit_line(frames),
        threads=[int(t) for _, t in per.index[1:20]],
        resources=[
            {"kind": "process", "what": f"PID {int(p)}", "runnable_s": round(v / 1e9, 3)}
            for p, v in by_pid.head(10).items()
        ],
        lost_s=lost,
    )
