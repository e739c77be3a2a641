"""Summaries in bounded memory: a finalized run's threads table read in
batches of whole threads.

Every per-thread-sample figure of the summary is a sum over each thread's
own samples (durations, time by state and wait reason, the runnable split,
counter deltas, GIL waits, event loops), and a finalized run stores its
thread samples sorted by (pid, tid, t_ns) (docs/format.md).  So the table
is read in batches of whole threads (``BATCH_ROWS`` rows at a time), each
batch goes through the same functions as a whole run in memory
(analysis/summary.py, gil.py, loops.py, runnable.py), and their small
per-thread results add up to the run's: the same figures, in memory that
depends on the batch, not on the run's length.

The findings read the rows they look at across threads: those of a thread
running, queued, on a lock or the GIL stay rows; a wait on I/O or in poll
becomes one row standing for the whole wait (``_keep``).  The rest of the
samples is not kept.

Runs that are not finalized (parts, possibly unsorted) and runs without
``start_ns`` are summarised from their DataFrames (``summary.summarize``):
they are short by nature (a tracer killed early, a run in progress).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .cols import strs
from .findings.base import Evidence

if TYPE_CHECKING:
    from .run import Run

BATCH_ROWS = 1_000_000
# Kept as rows for the findings: per-sample evidence (CPU bins, concurrent
# lock waiters, the longest GIL waits).
ROW_WAITS = ("running", "runnable", "lock", "gil")
# Kept as one row per uninterrupted wait (findings read them as intervals).
RUN_WAITS = ("socket", "pipe", "disk", "child", "poll")
KEPT = ["pid", "tid", "t_ns", "dt_ns", "wait", "arg0", "syscall"]
# rows_near reads this much around its window, so that the rows in it get
# the durations and runnable split they have in the whole run.
NEAR_NS = 60_000_000_000


class Unsorted(ValueError):
    """The threads file is not sorted by thread (not written by circuit's merge)."""


def streamable(run: Run) -> bool:
    """The run can be summarised in batches: finalized, one sorted threads file."""
    return (
        run.finalized
        and (run.path / "threads.parquet").exists()
        and run.meta.get("start_ns") is not None
    )


def thread_batches(path: Path, batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """The threads table of a finalized run as DataFrames of whole threads
    (no thread is split between two), each about ``batch_rows`` rows (a
    thread longer than that comes whole, alone).  Raises ValueError if the
    file is not sorted by thread (:class:`Unsorted`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from circuit.tracer.schema import arrow_schema

    from .run import _CATEGORIES

    cats = _CATEGORIES["threads"]
    f = pq.ParquetFile(path / "threads.parquet", read_dictionary=cats)
    cols = list(arrow_schema("threads").names)
    pending: Any = None
    last_key = -1
    for rb in f.iter_batches(batch_size=batch_rows, columns=cols):
        t = pa.Table.from_batches([rb])
        if pending is not None:
            t = pa.concat_tables([pending, t])
        key = _keys(t)
        if len(key) and (key[0] < last_key or np.any(key[1:] < key[:-1])):
            raise Unsorted(f"{path}: threads.parquet is not sorted by thread")
        if not len(key):
            continue
        last_key = int(key[-1])
        cut = int(np.searchsorted(key, key[-1], side="left"))
        pending = t.slice(cut)
        if cut:
            yield _frame(t.slice(0, cut), cats)
    if pending is not None and pending.num_rows:
        yield _frame(pending, cats)


def _keys(t: Any) -> np.ndarray:
    pid = t.column("pid").to_numpy().astype(np.int64)
    tid = t.column("tid").to_numpy().astype(np.int64)
    return (pid << 32) | tid


def _frame(t: Any, cats: list[str]) -> pd.DataFrame:
    df = t.to_pandas()
    for c in cats:
        col = df[c]
        if not isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype("category")
        df[c] = col.cat.set_categories(sorted(col.cat.categories))
    return df


def last_sample_ns(path: Path) -> int | None:
    """The threads table's last ``t_ns``, from the Parquet statistics (None without them)."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path / "threads.parquet").metadata
    i = md.schema.to_arrow_schema().get_field_index("t_ns")
    hi = None
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(i).statistics
        if st is None or not st.has_min_max:
            return None
        hi = st.max if hi is None else max(hi, st.max)
    return None if hi is None else int(hi)


def summarize_streamed(run: Run, batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """``run.summary()``'s figures, reading the threads table in batches
    (equal to :func:`summary.summarize`'s: tests/conftest.py checks it on
    every run the tests make)."""
    from .exits import apply_exits
    from .findings import find
    from .gil import classify_gil, gil_metrics_of, python_pids, thread_base
    from .loops import loop_figures
    from .runnable import split_rows
    from .summary import assemble, concat_facts, period_ns, summarize, thread_facts, with_durations

    if not streamable(run):
        return summarize(run)
    meta, processes, maps, stacks, gil = run.meta, run.processes, run.maps, run.stacks, run.gil
    per = period_ns(meta)
    attached = meta.get("mode") != "run"
    first_t = int(processes["t_ns"].min()) if len(processes) else 0
    last_t = last_sample_ns(run.path)
    if last_t is None:
        return summarize(run)
    need_times = gil is not None and len(gil) > 0
    facts, bases, lasts, kept, loops = [], [], [], [], []
    waited: set[int] = set()
    spans: dict[int, tuple[int, int]] = {}
    times: dict[int, np.ndarray] = {}
    time_of: list[pd.Series] = []
    lo, hi, mid = None, None, None
    n = 0
    try:
        for batch in thread_batches(run.path, batch_rows):
            n += len(batch)
            th = classify_gil(batch, maps) if len(maps) else batch
            d = with_durations(th, per)
            facts.append(thread_facts(d, first_t, attached))
            bases.append(thread_base(d, per))
            waited |= python_pids(None, None, th)
            _add_spans(spans, th)
            if need_times:
                _add_times(times, th)
            loops += loop_figures(meta, th, stacks, last_t=last_t)
            lasts.append(th.drop_duplicates(["pid", "tid"], keep="last"))
            s = split_rows(d[[c for c in (*KEPT, "state", "runnable_ns") if c in d.columns]])
            t = s["t_ns"].to_numpy().astype(np.int64)
            dt = s["dt_ns"].to_numpy().astype(np.int64)
            b_lo, b_hi, b_mid = int(t.min()), int((t + dt).max()), int((t + dt // 2).max())
            lo = b_lo if lo is None else min(lo, b_lo)
            hi = b_hi if hi is None else max(hi, b_hi)
            mid = b_mid if mid is None else max(mid, b_mid)
            time_of.append(s.groupby(["pid", "tid"])["dt_ns"].sum())
            kept.append(_keep(s))
    except Unsorted:
        return summarize(run)
    if not n:
        return summarize(run)
    gil_figures = gil_metrics_of(
        pd.concat(bases), waited, spans, times, gil, maps, per, meta.get("gil_sources")
    )
    out = assemble(meta, concat_facts(facts), n, processes, run.procs, stacks, gil_figures, loops)
    last_rows = pd.concat(lasts, ignore_index=True)
    apply_exits(out, meta, last_rows, processes, getattr(run, "exits", None))
    ev = _StreamEvidence(run, last_rows, out)
    ev.__dict__["samples"] = pd.concat(kept, ignore_index=True)
    ev.__dict__["span"] = (lo, hi, mid)
    ev.__dict__["time_of"] = pd.concat(time_of)
    out["findings"] = [f.to_dict() for f in find(ev)]
    return out


def _add_spans(spans: dict[int, tuple[int, int]], th: pd.DataFrame) -> None:
    g = th.groupby("pid", observed=True)["t_ns"].agg(["min", "max"])
    for p, r in g.iterrows():
        a, b = int(r["min"]), int(r["max"])
        old = spans.get(int(p))
        spans[int(p)] = (a, b) if old is None else (min(old[0], a), max(old[1], b))


def _add_times(times: dict[int, np.ndarray], th: pd.DataFrame) -> None:
    tp = th["pid"].to_numpy().astype(np.int64)
    tt = th["t_ns"].to_numpy().astype(np.int64)
    for p in np.unique(tp):
        mine = np.unique(tt[tp == p])
        old = times.get(int(p))
        times[int(p)] = mine if old is None else np.union1d(old, mine)


def _keep(s: pd.DataFrame) -> pd.DataFrame:
    """The rows of split samples ``s`` the findings read: ``ROW_WAITS``
    rows, and each uninterrupted ``RUN_WAITS`` wait as its first row
    standing for all of it (``dt_ns`` to the wait's end)."""
    wait = strs(s["wait"])
    pid = s["pid"].to_numpy().astype(np.int64)
    tid = s["tid"].to_numpy().astype(np.int64)
    arg0 = s["arg0"].to_numpy().astype(np.int64)
    t = s["t_ns"].to_numpy().astype(np.int64)
    dt = s["dt_ns"].to_numpy().astype(np.int64)
    n = len(s)
    new = np.ones(n, dtype=bool)
    new[1:] = (
        (pid[1:] != pid[:-1])
        | (tid[1:] != tid[:-1])
        | (wait[1:] != wait[:-1])
        | (arg0[1:] != arg0[:-1])
        | (t[1:] != t[:-1] + dt[:-1])
    )
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:] - 1, n - 1]
    end_t = np.empty(n, dtype=np.int64)
    end_t[starts] = t[ends] + dt[ends]
    rows = np.isin(wait, ROW_WAITS)
    runs = new & np.isin(wait, RUN_WAITS)
    keep = rows | runs
    out = s.loc[keep, KEPT].copy()
    d = out["dt_ns"].to_numpy().astype(np.int64).copy()
    r = runs[keep]
    d[r] = end_t[runs] - t[runs]
    out["dt_ns"] = d
    out["wait"] = pd.Categorical(wait[keep], categories=sorted((*ROW_WAITS, *RUN_WAITS)))
    return out


class _StreamEvidence(Evidence):
    """Evidence whose samples are only the rows the findings read
    (:func:`_keep`); rows with CPU counters come from the file on demand."""

    def __init__(self, run: Run, last_rows: pd.DataFrame, summary: dict[str, Any]) -> None:
        super().__init__(
            run.meta,
            last_rows,
            run.processes,
            run.fds,
            run.stacks,
            run.gil,
            summary,
        )
        self.run = run

    def rows_near(self, pid: int, first: int, last: int) -> pd.DataFrame:
        from .gil import classify_gil
        from .runnable import split_rows
        from .summary import with_durations

        def rows(lo: int | None, hi: int | None) -> pd.DataFrame:
            df = _read_rows(self.run.path, pid, lo, hi)
            if df.empty:
                return df
            if len(self.run.maps):
                df = classify_gil(df, self.run.maps)
            return split_rows(with_durations(df, self.period))

        s = rows(first - NEAR_NS, last + NEAR_NS)
        mine = s[(s["t_ns"] >= first) & (s["t_ns"] <= last)] if len(s) else s
        return mine if len(mine) else rows(None, None)


def _read_rows(path: Path, pid: int, lo: int | None, hi: int | None) -> pd.DataFrame:
    """The thread samples of ``pid`` (between ``lo`` and ``hi``), read with a filter."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .run import _CATEGORIES

    cond = pc.field("pid") == pid
    if lo is not None:
        cond = cond & (pc.field("t_ns") >= lo)
    if hi is not None:
        cond = cond & (pc.field("t_ns") <= hi)
    t = pq.read_table(
        path / "threads.parquet", filters=cond, read_dictionary=_CATEGORIES["threads"]
    )
    return _frame(t, _CATEGORIES["threads"])
