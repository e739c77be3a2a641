"""The invariants every run must hold, checked on runs of hostile targets."""

from __future__ import annotations

from typing import Any

import pandas as pd


def check_consistent(run, churn: bool = False) -> dict[str, Any]:
    """Assert the invariants every run must hold; return a few counts for the caller.

    * fd counts by kind sum to the total, on every process row;
    * per thread and per process, CPU counters never go backwards;
    * the number of thread rows at one (pid, t_ns) matches the process row's
      num_threads (read a few µs earlier): exactly on most samples, and within
      a tolerance when threads start and stop all the time (``churn``).
    """
    procs: pd.DataFrame = run.processes
    threads: pd.DataFrame = run.threads
    assert len(procs) > 0, "no process samples"
    kinds = [c for c in procs.columns if c.startswith("fds_")]
    assert (procs[kinds].sum(axis=1) == procs["fds"]).all(), "fd kinds do not sum to the total"
    assert (procs[kinds] >= 0).all().all()

    p = procs.sort_values(["pid", "t_ns"])
    for col in ("user_ns", "system_ns"):
        d = p.groupby("pid")[col].diff().dropna()
        assert (d >= 0).all(), f"process {col} went backwards"
    # An exec from a non-main thread hands the leader's tid to that thread (its
    # own, smaller counters): only the leader's counters may drop, and only
    # once per exec the sampler recorded (a new procs row for the pid; main's
    # tracer notices an exec at its next command-line check, a little later).
    execs = (run.procs.groupby("pid").size() - 1).to_dict()
    t = threads.sort_values(["pid", "tid", "t_ns"])
    for col in ("cpu_ns", "user_ns", "system_ns"):
        d = t.groupby(["pid", "tid"], observed=True)[col].diff()
        neg = t[d < 0]
        for (pid, tid), n in neg.groupby(["pid", "tid"], observed=True).size().items():
            assert pid == tid and n <= execs.get(pid, 0), f"thread {col} went backwards"
    s = run.summary()
    assert all(x["cpu_s"] >= 0 for x in s["threads"]), "negative thread CPU in the summary"
    assert all(x["cpu_s"] >= 0 for x in s["processes"]), "negative process CPU in the summary"
    # a tid is sampled at most once per timestamp
    assert not threads.duplicated(["t_ns", "pid", "tid"]).any()

    counted = threads.groupby(["pid", "t_ns"], observed=True)["tid"].nunique()
    joined = procs.set_index(["pid", "t_ns"])["num_threads"].to_frame().join(counted, how="left")
    joined["tid"] = joined["tid"].fillna(0)
    diff = (joined["num_threads"] - joined["tid"]).abs()
    exact = float((diff == 0).mean())
    if churn:
        # Threads are born and die between the stat read and the task listing
        # (with ~30 threads renewed every 3 ms, an exact match is partly luck).
        assert exact > 0.15, f"only {exact:.0%} of samples count threads exactly"
        assert (diff <= joined["num_threads"].clip(lower=1) * 0.5 + 5).mean() > 0.9
    else:
        assert exact > 0.9, f"only {exact:.0%} of samples count threads exactly"
    return {"exact_share": exact, "samples": len(procs), "max_diff": int(diff.max())}
