"""Run summary: one implementation for ``circuit summary``, the report and the API.

The functions take DataFrames and return DataFrames or plain dicts; they are
unit-tested on small hand-built frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from circuit.tracer.schema import FD_KIND_COLUMNS
from circuit.tracer.signals import signal_name
from circuit.tracer.waits import WAIT_REASONS

from .runnable import RUNNABLE, RUNNABLE_NS, add_runnable, own_ns

if TYPE_CHECKING:
    from .run import Run


def with_durations(threads: pd.DataFrame, period_ns: int) -> pd.DataFrame:
    """Add ``dt_ns``: how long each sample's state is taken to have lasted.

    A sample stands for the time until the same thread's next sample; a
    thread's last sample stands for one sampling period. Adds
    ``runnable_ns`` too: the part of ``dt_ns`` the kernel counted as the
    thread's run-queue delay (analysis/runnable.py), which :func:`time_by`
    counts as ``runnable`` rather than as the sample's own state.
    """
    t = threads["t_ns"].to_numpy()
    key = threads["tid"].to_numpy().astype(np.int64) + (
        threads["pid"].to_numpy().astype(np.int64) << 32
    )
    # Finalised runs are stored sorted by (pid, tid, t_ns): skip the sort then.
    ordered = len(t) < 2 or bool(
        np.all((key[1:] > key[:-1]) | ((key[1:] == key[:-1]) & (t[1:] >= t[:-1])))
    )
    df = threads if ordered else threads.sort_values(["pid", "tid", "t_ns"], kind="stable")
    if not ordered:
        t = df["t_ns"].to_numpy()
        key = df["tid"].to_numpy().astype(np.int64) + (df["pid"].to_numpy().astype(np.int64) << 32)
    dt = np.empty_like(t)
    if len(t):
        dt[:-1] = t[1:] - t[:-1]
        last = np.ones(len(t), dtype=bool)
        last[:-1] = key[1:] != key[:-1]
        dt[last] = period_ns
    return add_runnable(df.assign(dt_ns=dt), key)


def time_by(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Seconds per (pid, tid, value of ``column``), wide: one column per value.

    Time queued for a CPU (``runnable_ns``) counts as wait ``runnable`` and
    state ``R``, not as the sample's own value."""
    col = df[column]
    # a categorical groups on its codes; its values become the columns' names
    keys = [
        df["pid"],
        df["tid"],
        col if isinstance(col.dtype, pd.CategoricalDtype) else col.astype(str),
    ]
    own = pd.Series(own_ns(df), index=df.index)
    sums = own.groupby(keys, observed=True, dropna=False).sum() / 1e9
    wide = sums.unstack(-1, fill_value=0.0)
    wide.columns = pd.Index([str(c) for c in wide.columns], name=column)
    wide.index.names = ["pid", "tid"]
    if RUNNABLE_NS in df.columns and column in ("wait", "state"):
        queued = df.groupby(["pid", "tid"], observed=True)[RUNNABLE_NS].sum() / 1e9
        into = RUNNABLE if column == "wait" else "R"
        if into not in wide.columns:
            wide[into] = 0.0
        wide[into] = wide[into].add(queued.reindex(wide.index, fill_value=0.0), fill_value=0.0)
    return wide


def _baseline(df: pd.DataFrame, keys: list[str], first_t: int, attached: bool) -> pd.DataFrame:
    """First and last rows per entity; the first is a baseline only when the
    entity was already there when sampling started on a process we attached to
    (its counters include work done before we looked)."""
    fast = _contiguous_baseline(df, keys, first_t, attached)
    if fast is not None:
        return fast
    # drop_duplicates (hashing) keeps the same rows in the same order as
    # groupby().head(1)/.tail(1), at a fraction of the cost on 1M rows.
    first = df.drop_duplicates(keys, keep="first").set_index(keys)
    last = df.drop_duplicates(keys, keep="last").set_index(keys)
    if not attached:
        first = first * 0
    else:
        fresh = first["t_ns"] > first_t
        first.loc[fresh] = 0
    return last - first.reindex(last.index)


def _contiguous_baseline(
    df: pd.DataFrame, keys: list[str], first_t: int, attached: bool
) -> pd.DataFrame | None:
    """:func:`_baseline` of a frame whose entities' rows are together and
    in ascending order (with_durations' output, one process's samples):
    their first and last rows are where the key changes, the rows
    drop_duplicates keeps, in the same order.  None for any other frame."""
    if not len(df) or len(keys) > 2:
        return None
    parts = [df[k].to_numpy() for k in keys]
    if any(p.dtype.kind not in "iu" for p in parts):
        return None
    key = parts[0].astype(np.int64)
    if len(parts) == 2:
        key = (key << 32) | parts[1].astype(np.int64)
    if not bool(np.all(key[1:] >= key[:-1])):
        return None
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)] - 1
    cols = [c for c in df.columns if c not in keys]
    if len(set(df[cols].dtypes)) != 1:
        return None  # (one array keeps each column's own dtype only if they share it)
    values = df[cols].to_numpy()
    if values.dtype.kind not in "iuf":
        return None
    first = values[starts].copy()
    if attached:
        first[first[:, cols.index("t_ns")] > first_t] = 0
    else:
        first[:] = 0
    if len(keys) == 2:
        index = pd.MultiIndex.from_arrays([parts[0][ends], parts[1][ends]], names=keys)
    else:
        index = pd.Index(parts[0][ends], name=keys[0])
    return pd.DataFrame(values[ends] - first, index=index, columns=cols)


def _rate_hz(meta: dict[str, Any], processes: pd.DataFrame) -> float:
    """The achieved rate; for a run that was not finalised, from its samples."""
    rate = meta.get("rate_hz_achieved")
    if rate is not None:
        return float(rate)
    t = processes["t_ns"].unique() if len(processes) else []
    if len(t) < 2:
        return 0.0
    return round((len(t) - 1) / ((int(t.max()) - int(t.min())) / 1e9), 3)


def _profiles(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """meta.json's ``profiles`` with each file's path joined to the run folder."""
    base = Path(str(meta.get("path") or "."))
    out = []
    for p in meta.get("profiles") or []:
        files = {k: str(base / v) for k, v in p.items() if k != "pid" and v}
        out.append({"pid": p.get("pid"), **files})
    return out


def period_ns(meta: dict[str, Any]) -> int:
    rate = meta.get("rate_hz_achieved") or meta.get("rate_hz_requested") or 100.0
    return round(1e9 / float(rate))


def summarize(run: Run) -> dict[str, Any]:
    meta = run.meta
    return summarize_frames(
        meta,
        run.threads,
        run.processes,
        run.procs,
        maps=run.maps,
        stacks=run.stacks,
        gil=run.gil,
        fds=run.fds,
        exits=getattr(run, "exits", None),
    )


def summarize_frames(
    meta: dict[str, Any],
    threads: pd.DataFrame,
    processes: pd.DataFrame,
    procs: pd.DataFrame,
    maps: pd.DataFrame | None = None,
    stacks: pd.DataFrame | None = None,
    gil: pd.DataFrame | None = None,
    fds: pd.DataFrame | None = None,
    exits: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The summary of a run's frames.  ``gil``: the run's ``gil`` table (the
    GIL as its interpreter recorded it); without it the GIL figures come from
    the futex evidence alone (analysis/gil.py).  ``findings``: the ranked
    diagnoses (analysis/findings/, docs/findings.md).  ``exits``: the exit
    records (analysis/exits.py)."""
    from .exits import apply_exits
    from .findings import find_frames
    from .gil import classify_gil, gil_metrics

    if maps is not None and len(threads):
        threads = classify_gil(threads, maps)  # `lock` -> `gil` (docs/pyspy.md)
    attached = meta.get("mode") != "run"
    first_t = int(processes["t_ns"].min()) if len(processes) else 0
    per = period_ns(meta)
    df = with_durations(threads, per) if len(threads) else threads  # (sorted by thread, time)
    facts = thread_facts(df, first_t, attached)
    gil_figures = gil_metrics(df, gil, maps, per, meta.get("gil_sources"))
    from .loops import loop_figures  # event loops: their stalls and busy time (docs/loops.md)

    loops = loop_figures(meta, threads, stacks) if len(threads) else []
    out = assemble(meta, facts, len(threads), processes, procs, stacks, gil_figures, loops)
    # What died between samples: exact finals, rows for the unseen (analysis/exits.py).
    apply_exits(out, meta, threads, processes, exits)
    # after the figures: the findings read them (GIL model, wall time)
    out["findings"] = find_frames(meta, threads, processes, fds, stacks, gil, out)
    return out


COUNTERS = ["t_ns", "cpu_ns", "user_ns", "system_ns", "ctx_vol", "ctx_invol", "run_delay_ns"]


def thread_facts(df: pd.DataFrame, first_t: int, attached: bool) -> dict[str, Any]:
    """What the summary takes from thread samples (``df``: with_durations'),
    per thread, so that batches of whole threads add up to the run's
    (analysis/query.py): counter deltas, seconds by state and by wait
    reason, the last name."""
    if not len(df):
        return {}
    return {
        "delta": counter_deltas(df, first_t, attached),
        "by_state": time_by(df, "state"),
        "by_wait": time_by(df, "wait"),
        "names": df.groupby(["pid", "tid"], observed=True)["name"].last(),
    }


def concat_facts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The facts of several batches of whole threads as one run's."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    return {
        "delta": pd.concat([p["delta"] for p in parts]),
        "by_state": pd.concat([p["by_state"] for p in parts]).fillna(0.0),
        "by_wait": pd.concat([p["by_wait"] for p in parts]).fillna(0.0),
        "names": pd.concat([p["names"].astype(str) for p in parts]),
    }


def counter_deltas(threads: pd.DataFrame, first_t: int, attached: bool) -> pd.DataFrame:
    """Each thread's counters over the samples (index pid, tid): CPU, user,
    system, switches, run delay.  ``attached``: a thread already there at
    ``first_t`` counts from its first sample (else from zero: it started
    under circuit)."""
    return _baseline(threads[["pid", "tid", *COUNTERS]], ["pid", "tid"], first_t, attached)


def own_cpu_ns(tdelta: pd.DataFrame) -> pd.Series:
    """A thread's CPU from :func:`counter_deltas`: schedstat's, or user +
    system where schedstat did not count (the psutil backend)."""
    return tdelta["cpu_ns"].where(tdelta["cpu_ns"] > 0, tdelta["user_ns"] + tdelta["system_ns"])


def process_figures(
    processes: pd.DataFrame,
    procs: pd.DataFrame,
    thread_cpu_ns: dict[int, float],
    first_t: int,
    attached: bool,
) -> tuple[list[dict[str, Any]], float, float]:
    """Per process: CPU over the samples, peaks of RSS, threads and fds;
    with the user and system totals.  ``thread_cpu_ns``: its threads' own
    CPU (:func:`own_cpu_ns`) per pid."""
    proc_list: list[dict[str, Any]] = []
    user_total = system_total = 0.0
    if not len(processes):
        return proc_list, user_total, system_total
    num = ["t_ns", "user_ns", "system_ns"]
    delta = _baseline(processes[["pid", *num]], ["pid"], first_t, attached).astype(float)
    # A process's user/system counters are read with the slow counters
    # (every 20 ms at most): when its parent reaps it before circuit sees
    # the zombie, its last ones are up to 20 ms old.  Its threads' CPU
    # (schedstat, read at every sample) is then the better total; the
    # user/system split stays the counters'.
    for pid in delta.index:
        counted = float(delta.at[pid, "user_ns"] + delta.at[pid, "system_ns"])
        threads_ns = float(thread_cpu_ns.get(pid, 0.0))
        if threads_ns > counted:
            if counted > 0:
                scale = threads_ns / counted
                delta.at[pid, "user_ns"] *= scale
                delta.at[pid, "system_ns"] *= scale
            else:
                delta.at[pid, "user_ns"] = threads_ns
    g = processes.groupby("pid")
    peaks = g[["rss_bytes", "num_threads", "fds", *FD_KIND_COLUMNS]].max()
    ppid = g["ppid"].last()
    info = procs.drop_duplicates("pid", keep="last").set_index("pid") if len(procs) else None
    for pid in sorted(delta.index):
        user = delta.at[pid, "user_ns"] / 1e9
        system = delta.at[pid, "system_ns"] / 1e9
        user_total += user
        system_total += system
        pk = peaks.loc[pid]
        proc_list.append(
            {
                "pid": int(pid),
                "ppid": int(ppid[pid]),
                "cmdline": str(info.at[pid, "cmdline"])
                if info is not None and pid in info.index
                else "",
                "cpu_s": round(user + system, 6),
                "cpu_user_s": round(user, 6),
                "cpu_system_s": round(system, 6),
                "rss_peak_bytes": int(pk["rss_bytes"]),
                "threads_peak": int(pk["num_threads"]),
                "fds_peak": int(pk["fds"]),
                "fds_peak_by_kind": {c[4:]: int(pk[c]) for c in FD_KIND_COLUMNS},
            }
        )
    return proc_list, user_total, system_total


def assemble(
    meta: dict[str, Any],
    facts: dict[str, Any],
    thread_samples: int,
    processes: pd.DataFrame,
    procs: pd.DataFrame,
    stacks: pd.DataFrame | None,
    gil_figures: dict[str, Any],
    loops: list[dict[str, Any]],
) -> dict[str, Any]:
    """The summary of a run from its threads' facts (:func:`thread_facts`)
    and its other tables; the exits and findings are added after."""
    from .pyspy import thread_names

    py_names = thread_names(stacks) if stacks is not None else {}
    attached = meta.get("mode") != "run"
    first_t = int(processes["t_ns"].min()) if len(processes) else 0
    last_t = int(processes["t_ns"].max()) if len(processes) else 0
    wall = meta.get("wall_s")
    if wall is None:  # not finalised: up to the last flushed sample
        wall = (last_t - int(meta.get("start_ns", first_t))) / 1e9 if len(processes) else 0.0
    samples = meta.get("samples")
    if samples is None:
        samples = int(processes["t_ns"].nunique())

    # -- each thread's counters over the run (its own CPU: a process's is never less)
    thread_cpu_ns: dict[int, float] = {}
    tdelta = facts.get("delta", pd.DataFrame())
    if facts:
        thread_cpu_ns = own_cpu_ns(tdelta).groupby(level="pid").sum().to_dict()

    # -- processes
    proc_list, user_total, system_total = process_figures(
        processes, procs, thread_cpu_ns, first_t, attached
    )

    # -- threads
    thread_list: list[dict[str, Any]] = []
    if facts:
        by_state, by_wait, names = facts["by_state"], facts["by_wait"], facts["names"]
        delta = tdelta
        for key in delta.index:
            d = delta.loc[key]
            cpu_ns = d["cpu_ns"] if d["cpu_ns"] > 0 else d["user_ns"] + d["system_ns"]
            bw = by_wait.loc[key] if key in by_wait.index else pd.Series(dtype=float)
            bs = by_state.loc[key] if key in by_state.index else pd.Series(dtype=float)
            thread_list.append(
                {
                    "pid": int(key[0]),
                    "tid": int(key[1]),
                    "name": str(names[key]),
                    "python_name": py_names.get((int(key[0]), int(key[1]))),
                    "cpu_s": round(cpu_ns / 1e9, 6),
                    "cpu_user_s": round(d["user_ns"] / 1e9, 6),
                    "cpu_system_s": round(d["system_ns"] / 1e9, 6),
                    "ctx_voluntary": int(d["ctx_vol"]),
                    "ctx_involuntary": int(d["ctx_invol"]),
                    "run_delay_s": round(max(d["run_delay_ns"], 0) / 1e9, 6),
                    "time_by_state": {str(k): round(float(v), 6) for k, v in bs.items() if v},
                    "time_by_wait": {w: round(float(bw.get(w, 0.0)), 6) for w in WAIT_REASONS},
                }
            )

    cpu = user_total + system_total
    out = {
        "run": str(meta.get("path", "")),
        "mode": meta.get("mode"),
        "command": meta.get("command"),
        "finalized": bool(meta.get("finalized")),
        "wall_s": round(float(wall), 6),
        "cpu_user_s": round(user_total, 6),
        "cpu_system_s": round(system_total, 6),
        "cpu_s": round(cpu, 6),
        "parallelism": round(cpu / wall, 4) if wall else 0.0,
        "samples": int(samples),
        "thread_samples": int(thread_samples),
        "rate_hz": _rate_hz(meta, processes),
        "rate_hz_requested": meta.get("rate_hz_requested"),
        "missed_deadlines": meta.get("missed_deadlines"),
        "sampler_cpu_s": meta.get("sampler_cpu_s"),
        "exit_code": meta.get("exit_code"),
        "exit_signal": signal_name(meta.get("exit_code")),  # "SIGSEGV" for -11
        "stop_reason": meta.get("stop_reason"),
        "processes": proc_list,
        "threads": thread_list,
        "gil": gil_figures,
        "loops": loops,
        # py-spy profiles (--profile): their files, from the run folder
        "profiles": _profiles(meta),
        "warnings": list(meta.get("warnings") or []),
    }
    return out
