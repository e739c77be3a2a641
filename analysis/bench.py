"""Bench-level analysis: the tables of a ``circuit bench`` folder and
comparisons across its runs, models and workloads.

A bench folder (written by :mod:`circuit.bench`) holds ``bench.json``,
``runs.parquet|csv`` (one row per traced run: workload, model, tasks,
repeat, wall_s, cpu_s, parallelism, run = path of the run folder, ...),
``results.parquet|csv`` (one row per cell: medians and spread, speedup) and
the run folders.

The report functions take the per-run table (:func:`read_results`) and degrade
gracefully: a missing column gives an empty or narrower frame, never an
exception.  The table functions (:func:`run_metrics`, :func:`aggregate`) are
pure: per-run numbers come from a run's summary plus the workload's own JSON
record, so they are unit-tested on hand-built inputs.  Processes a workload
starts as helpers (io-http's server) are left out of the workload's figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from circuit.errors import CircuitError
from circuit.tracer.schema import FD_KIND_COLUMNS, META_FILE
from circuit.tracer.waits import WAIT_REASONS
from circuit.workloads import HELPER_MODULES

from .gil import combine

# The per-run table, first: ``circuit bench`` writes it as runs.*, and its
# results.* holds one row per cell (medians), which the report does not want.
RESULT_FILES = (
    "runs.parquet",
    "runs.csv",
    "results.parquet",
    "results.csv",
    "results.jsonl",
    "results.json",
)
BENCH_FILE = "bench.json"  # the matrix and the runs, as circuit.bench records them


def is_bench(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_dir() or (p / META_FILE).exists():
        return False
    return (p / BENCH_FILE).exists() or any((p / f).exists() for f in RESULT_FILES)


def read_results(path: str | Path) -> pd.DataFrame:
    """The results table of a bench folder; ``run`` paths made absolute."""
    p = Path(path)
    df: pd.DataFrame | None = None
    for f in RESULT_FILES:
        fp = p / f
        if not fp.exists():
            continue
        try:
            if f.endswith(".parquet"):
                df = pd.read_parquet(fp)
            elif f.endswith(".csv"):
                df = pd.read_csv(fp)
            elif f.endswith(".jsonl"):
                df = pd.read_json(fp, lines=True)
            else:
                data = json.loads(fp.read_text())
                df = pd.DataFrame(data.get("results", data) if isinstance(data, dict) else data)
        except (OSError, ValueError) as e:
            raise CircuitError(f"{fp} is not a readable results table: {e}") from None
        break
    if df is None and (p / BENCH_FILE).exists():
        try:
            data = json.loads((p / BENCH_FILE).read_text())
        except (OSError, ValueError) as e:
            raise CircuitError(f"{p / BENCH_FILE} is corrupted: {e}") from None
        rows = data.get("results") if isinstance(data, dict) else None
        df = pd.DataFrame(rows or [])
    if df is None:
        raise CircuitError(f"{p} is not a bench folder (no {BENCH_FILE} or results table)")
    if "run" in df.columns:
        df["run"] = [
            str(r if Path(str(r)).is_absolute() else p / str(r)) if isinstance(r, str) and r else r
            for r in df["run"]
        ]
    return df


def bench_meta(path: str | Path) -> dict[str, Any]:
    f = Path(path) / BENCH_FILE
    if not f.exists():
        return {}
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if k != "results"}


def _has(df: pd.DataFrame, *cols: str) -> bool:
    return all(c in df.columns for c in cols)


def _keys(df: pd.DataFrame, wanted: tuple[str, ...]) -> list[str]:
    return [c for c in wanted if c in df.columns]


def model_comparison(results: pd.DataFrame) -> pd.DataFrame:
    """Median wall and CPU seconds (and parallelism) per workload, model and
    task count over repeats; ``runs`` = how many repeats went into each median."""
    keys = _keys(results, ("workload", "model", "tasks"))
    vals = _keys(results, ("wall_s", "cpu_s", "parallelism"))
    if results.empty or "model" not in keys or not vals:
        return pd.DataFrame(columns=[*keys, *vals, "runs"])
    df = results.copy()
    if "parallelism" not in df.columns and _has(df, "wall_s", "cpu_s"):
        df["parallelism"] = df["cpu_s"] / df["wall_s"].where(df["wall_s"] > 0)
        vals.append("parallelism")
    g = df.groupby(keys, sort=True, dropna=False)
    out = g[vals].median()
    out["runs"] = g.size()
    return order_models(out.reset_index())


def scaling(results: pd.DataFrame) -> pd.DataFrame:
    """Median wall seconds per workload, model and task count (for wall vs tasks);
    only the (workload, model) pairs measured at two or more task counts: a
    single point is no line."""
    if not _has(results, "model", "tasks", "wall_s") or results.empty:
        return pd.DataFrame(columns=["workload", "model", "tasks", "wall_s", "runs"])
    keys = _keys(results, ("workload", "model", "tasks"))
    g = results.groupby(keys, sort=True, dropna=False)["wall_s"]
    out = g.median().to_frame()
    out["runs"] = g.size()
    return lines(out.reset_index(), "tasks")


def lines(df: pd.DataFrame, x: str) -> pd.DataFrame:
    """The rows of the (workload, model) series that have two or more distinct
    ``x``: what a plot can draw as lines rather than lone points."""
    if df.empty or x not in df.columns:
        return df.iloc[0:0]
    series = _keys(df, ("workload", "model"))
    if not series:
        return df if df[x].nunique() >= 2 else df.iloc[0:0]
    counts = df.groupby(series, dropna=False)[x].transform("nunique")
    return df[counts >= 2].reset_index(drop=True)


def compared_cells(cmp: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`model_comparison` that compare models like for like:
    per workload, the task count run under the most models (the largest such
    count on a tie).  A sweep of one model over task counts adds rows that
    belong to scaling, not to the comparison of models."""
    if cmp.empty or "tasks" not in cmp.columns or "model" not in cmp.columns:
        return cmp
    by = ["workload"] if "workload" in cmp.columns else []
    keys = [*by, "tasks"]
    n = cmp.groupby(keys, dropna=False)["model"].nunique().rename("_n").reset_index()
    n = n.sort_values([*by, "_n", "tasks"], kind="stable")
    best = n.groupby(by, dropna=False).tail(1) if by else n.tail(1)
    return cmp.merge(best[keys], on=keys, how="inner")


MODEL_ORDER = (
    "sequential",
    "threads",
    "thread-pool",
    "asyncio",
    "asyncio-uvloop",
    "uvloop",
    "processes",
    "process-pool",
)


def order_models(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in the article's order: sequential, threads, asyncio, processes, others."""
    if "model" not in df.columns or df.empty:
        return df
    rank = {m: i for i, m in enumerate(MODEL_ORDER)}
    r = df["model"].map(lambda m: rank.get(str(m), len(rank)))
    keys = [c for c in ("workload",) if c in df.columns]
    return (
        df.assign(_r=r)
        .sort_values([*keys, "_r", "model"], kind="stable")
        .drop(columns="_r")
        .reset_index(drop=True)
    )


Loader = Callable[[str], Any]


def _default_loader(path: str) -> Any:
    from .run import load

    return load(path)


def per_run_waits(results: pd.DataFrame, loader: Loader | None = None) -> pd.DataFrame:
    """For each result row whose run folder loads: thread-seconds per wait
    reason (one column per reason), thread CPU seconds, GIL contention (the
    run's GIL model, analysis/gil.py: as in the bench table), threads seen,
    peak sockets and epoll fds.  Rows whose run is missing are skipped."""
    from .gil import run_gil
    from .metrics import fd_peaks, run_period
    from .summary import time_by, with_durations

    if "run" not in results.columns or results.empty:
        return pd.DataFrame()
    load = loader or _default_loader
    rows = []
    for i, r in results.iterrows():
        path = r["run"]
        if not isinstance(path, str) or not path:
            continue
        try:
            run = load(path)
            th = run.threads
            pr = run.processes
        except (CircuitError, OSError):
            continue
        # A helper (io-http's server) is a process of the traced tree, not
        # the workload's: left out, as from the bench table (run_metrics).
        helpers = _helper_pids(run)
        if helpers:
            th = th[~th["pid"].isin(helpers)]
            pr = pr[~pr["pid"].isin(helpers)]
        per = run_period(run.meta)
        row: dict[str, Any] = {"row": i}
        if len(th):
            df = with_durations(th, per)
            # A process's last sample as a zombie is neither running nor
            # asleep (it would count one period of `other`).
            df = df[~df["state"].astype(str).isin(["Z", "X"])]
            by = time_by(df, "wait").sum()
            for w in WAIT_REASONS:
                row[f"wait_{w}_s"] = float(by.get(w, 0.0))
            row["threads_seen"] = int(df[["pid", "tid"]].drop_duplicates().shape[0])
            gil = run_gil(run)
            work = [p["pid"] for p in gil["processes"] if p["pid"] not in helpers]
            c = combine(gil["processes"], work)["contention"]
            row["gil_contention"] = np.nan if c is None else float(c)
        peaks = fd_peaks(pr)
        if len(peaks):
            row["sockets_peak"] = int(peaks.get("socket", pd.Series([0])).max())
            row["epoll_peak"] = int(peaks.get("epoll", pd.Series([0])).max())
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    w = pd.DataFrame(rows).set_index("row")
    # gil_contention is in a runs table already: the run folder's own figure
    # (the same model) replaces it, so older bench folders read alike
    return results.drop(columns=[c for c in w.columns if c in results]).join(w, how="inner")


def is_helper(cmdline: Any) -> bool:
    """Whether a command line runs one of the workloads' helper modules."""
    return any(m in str(cmdline) for m in HELPER_MODULES)


def _helper_pids(run: Any) -> set[int]:
    try:
        procs = getattr(run, "procs", None)
    except (CircuitError, OSError):
        return set()
    if procs is None or procs.empty or "cmdline" not in procs.columns:
        return set()
    mask = procs["cmdline"].map(is_helper).astype(bool)
    return {int(p) for p in procs.loc[mask, "pid"]}


def sleep_split(runs: pd.DataFrame) -> pd.DataFrame:
    """Per workload, model and task count: median thread-seconds per wait reason
    and median CPU seconds (from per_run_waits output).  Runs of different task
    counts are never pooled: 4 tasks sleep 4 times as long as 1."""
    cols = [c for c in runs.columns if c.startswith("wait_") and c.endswith("_s")]
    if runs.empty or "model" not in runs.columns or not cols:
        return pd.DataFrame()
    keys = _keys(runs, ("workload", "model", "tasks"))
    vals = cols + _keys(runs, ("cpu_s", "wall_s"))
    return order_models(runs.groupby(keys, sort=True)[vals].median().reset_index())


def gil_vs_threads(runs: pd.DataFrame) -> pd.DataFrame:
    """GIL contention against thread count (tasks, else threads seen), median
    per workload, model and count; only runs with GIL data."""
    cols = ["workload", "model", "threads", "gil_contention"]
    if runs.empty or "gil_contention" not in runs.columns:
        return pd.DataFrame(columns=cols)
    df = runs[runs["gil_contention"].notna()].copy()
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["threads"] = df["tasks"] if "tasks" in df.columns else df.get("threads_seen")
    keys = _keys(df, ("workload", "model", "threads"))
    return df.groupby(keys, sort=True)["gil_contention"].median().reset_index()


# -- circuit bench: per-run metrics, per-cell table ------------------------------

KEYS = ("workload", "model", "tasks")
# Metrics reported per cell as median, min and max over the repeats.
SPREAD_METRICS = ("wall_s", "run_wall_s", "cpu_s", "parallelism", "ctx_per_s")
FD_KINDS = tuple(c[len("fds_") :] for c in FD_KIND_COLUMNS)
BASELINE_MODEL = "sequential"


def run_metrics(summary: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any]:
    """One row of the runs table from a run's summary and the workload's record.

    ``wall_s`` is the workload's own clock around its tasks (what the article
    times); ``run_wall_s`` is the whole traced command, interpreter start-up
    included.  CPU, parallelism, context switches, threads and fds count the
    workload's processes only: the io-http server is a separate process in
    the traced tree and is reported as ``server_cpu_s``.
    """
    result = result or {}
    server_pid = result.get("server_pid")
    procs = summary.get("processes") or []

    def is_server(p: dict[str, Any]) -> bool:
        if server_pid is not None:
            return p["pid"] == server_pid
        return is_helper(p.get("cmdline", ""))

    work = [p for p in procs if not is_server(p)]
    server = [p for p in procs if is_server(p)]
    pids = {p["pid"] for p in work}
    run_wall = float(summary.get("wall_s") or 0.0)
    cpu = sum(float(p["cpu_s"]) for p in work)
    threads = [t for t in summary.get("threads") or [] if t["pid"] in pids]
    ctx = sum(int(t["ctx_voluntary"]) + int(t["ctx_involuntary"]) for t in threads)
    root_pid = result.get("pid")
    root = [p for p in work if p["pid"] == root_pid] or work[:1]
    gil = combine((summary.get("gil") or {}).get("processes") or [], pids)
    row: dict[str, Any] = {
        "ok": bool(result) and summary.get("exit_code") == 0,
        "exit_code": summary.get("exit_code"),
        "wall_s": float(result["wall_s"]) if "wall_s" in result else math.nan,
        "run_wall_s": run_wall,
        "cpu_s": cpu,
        "parallelism": cpu / run_wall if run_wall > 0 else math.nan,
        "ctx_switches": ctx,
        "ctx_per_s": ctx / run_wall if run_wall > 0 else math.nan,
        "threads_peak": int(root[0]["threads_peak"]) if root else 0,
        "processes": len(work),
        "server_cpu_s": sum(float(p["cpu_s"]) for p in server) if server else math.nan,
        # GIL-wait / thread time of the workload's threads that ran Python
        # (analysis/gil.py); NaN where none did (no Python process, or no GIL data).
        "gil_contention": math.nan if gil["contention"] is None else float(gil["contention"]),
        "gil_source": gil["source"],
        "python": result.get("python"),
        "python_version": result.get("python_version"),
        "gil_enabled": result.get("gil_enabled"),
    }
    for k in FD_KINDS:
        # Sum of per-process peaks: an upper bound on what the tree held at once.
        row[f"fds_{k}"] = sum(int(p["fds_peak_by_kind"].get(k, 0)) for p in work)
    for w in WAIT_REASONS:
        # Thread-seconds in each wait reason, all the workload's threads together.
        row[f"threads_{w}_s"] = sum(float(t.get("time_by_wait", {}).get(w, 0.0)) for t in threads)
    return row


def top_wait(row: dict[str, Any] | pd.Series) -> str:
    """Where the workload's threads spent most of their time (``running`` or a
    wait reason), with its share: ``sleep 86%``."""
    times = {w: float(row.get(f"threads_{w}_s", 0.0) or 0.0) for w in WAIT_REASONS}
    times = {w: v for w, v in times.items() if not math.isnan(v) and v > 0}
    if not times:
        return ""
    w = max(times, key=lambda k: times[k])
    return f"{w} {100 * times[w] / sum(times.values()):.0f}%"


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: median/min/max of each metric, speedup vs sequential.

    ``speedup`` is the sequential cell's median wall time over this cell's
    (same workload and number of tasks): measured side by side in one bench.
    Its min/max use this cell's slowest and fastest run.  Failed runs are
    counted, not averaged.
    """
    cols: list[str] = [
        *KEYS,
        "scale",
        "runs",
        "runs_ok",
        *(f"{m}_{s}" for m in SPREAD_METRICS for s in ("median", "min", "max")),
        "speedup_median",
        "speedup_min",
        "speedup_max",
        "threads_peak",
        "processes",
        *(f"fds_{k}" for k in FD_KINDS),
        *(f"threads_{w}_s" for w in WAIT_REASONS),
        "server_cpu_s",
        "gil_contention",
        "python",
        "gil_enabled",
    ]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in runs.groupby(list(KEYS), sort=False):
        ok = g[g["ok"].astype(bool)]
        row: dict[str, Any] = dict(zip(KEYS, key, strict=True))
        row["scale"] = g["scale"].iloc[0] if "scale" in g else math.nan
        row["runs"] = len(g)
        row["runs_ok"] = len(ok)
        for m in SPREAD_METRICS:
            v = ok[m].astype(float)
            row[f"{m}_median"] = v.median() if len(v) else math.nan
            row[f"{m}_min"] = v.min() if len(v) else math.nan
            row[f"{m}_max"] = v.max() if len(v) else math.nan
        row["threads_peak"] = ok["threads_peak"].max() if len(ok) else math.nan
        row["processes"] = ok["processes"].max() if len(ok) else math.nan
        for k in FD_KINDS:
            row[f"fds_{k}"] = ok[f"fds_{k}"].median() if len(ok) else math.nan
        for w in WAIT_REASONS:
            c = f"threads_{w}_s"
            row[c] = ok[c].median() if len(ok) and c in ok else math.nan
        row["server_cpu_s"] = ok["server_cpu_s"].median() if len(ok) else math.nan
        row["gil_contention"] = ok["gil_contention"].median() if len(ok) else math.nan
        row["python"] = ok["python"].iloc[0] if len(ok) else None
        row["gil_enabled"] = ok["gil_enabled"].iloc[0] if len(ok) else None
        rows.append(row)
    out = pd.DataFrame(rows)
    base = out[out["model"] == BASELINE_MODEL].set_index(["workload", "tasks"])["wall_s_median"]
    ref = np.array(
        [base.get((w, n), math.nan) for w, n in zip(out["workload"], out["tasks"], strict=True)],
        dtype=float,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        out["speedup_median"] = ref / out["wall_s_median"].to_numpy(dtype=float)
        out["speedup_min"] = ref / out["wall_s_max"].to_numpy(dtype=float)
        out["speedup_max"] = ref / out["wall_s_min"].to_numpy(dtype=float)
    return out[cols]
