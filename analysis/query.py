"""Summaries of long runs: a finalized run's threads table read in
batches of whole threads.

Every per-thread-sample figure of the summary is a sum over each thread's
own samples (durations, time by state and wait reason, the runnable split,
counter deltas, GIL waits, event loops), and a finalized run stores its
thread samples sorted by (pid, tid, t_ns) (docs/format.md).  So the table
is read ``BATCH_ROWS`` rows at a time, cut between threads, each batch is
reduced in NumPy (analysis/batch.py) and the batches' small per-thread
results add up to the run's: the same figures as the in-memory path
(``summary.summarize``), in memory that depends on the batch and on the
rows the findings read, not on the whole run.

The findings read rows across threads: a thread's GIL waits stay rows, a
wait on I/O or in poll becomes one row standing for the whole wait, CPU
demand is summed per bin and lock rows are reduced per thread
(batch._kept, findings/lock_waits.py).  What of them grows with the run:
docs/longruns.md, "Limits".

Runs that are not finalized (parts, possibly unsorted) and runs without
``start_ns`` are summarised from their DataFrames: they are short by
nature (a tracer killed early, a run in progress).
"""

from __future__ import annotations

import functools
import itertools
import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .cols import eq
from .findings.base import Evidence

if TYPE_CHECKING:
    from .run import Run

BATCH_ROWS = 250_000
# Batches reduced at once (0: one per CPU).
WORKERS = int(os.environ.get("CIRCUIT_ANALYSIS_THREADS", "0"))
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
    thread longer than that comes whole, alone).  Raises :class:`Unsorted`
    if the file is not sorted by thread."""
    from .run import _CATEGORIES, categorical_frame

    for t in table_batches(path, batch_rows):
        yield categorical_frame(t, _CATEGORIES["threads"])


def table_batches(path: Path, batch_rows: int = BATCH_ROWS) -> Iterator[Any]:
    """:func:`thread_batches` as pyarrow Tables (text columns dictionary-encoded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from circuit.tracer.schema import arrow_schema

    from .run import _CATEGORIES

    # pre_buffer keeps every range it read for the life of the reader: the
    # arrow pool would then grow with the file.
    f = pq.ParquetFile(
        path / "threads.parquet", read_dictionary=_CATEGORIES["threads"], pre_buffer=False
    )
    cols = list(arrow_schema("threads").names)
    pending: Any = None
    pending_key = np.zeros(0, dtype=np.int64)
    for rb in f.iter_batches(batch_size=batch_rows, columns=cols):
        new = _keys(rb)
        if not len(new):
            continue
        if (len(pending_key) and new[0] < pending_key[-1]) or np.any(new[1:] < new[:-1]):
            raise Unsorted(f"{path}: threads.parquet is not sorted by thread")
        t = pa.Table.from_batches([rb])
        if pending is not None:
            t = pa.concat_tables([pending, t])
        key = np.concatenate([pending_key, new]) if len(pending_key) else new
        if t.num_rows < batch_rows:
            # not a batch yet (a small run, the end of a row group): read on
            pending, pending_key = t, key
            continue
        cut = int(np.searchsorted(key, key[-1], side="left"))
        pending, pending_key = t.slice(cut), key[cut:]
        if cut:
            whole = _whole(t.slice(0, cut))
            del t, rb  # (a suspended generator keeps its locals: the chunks)
            yield whole
            del whole
    if pending is not None and pending.num_rows:
        yield _whole(pending)


def _whole(t: Any) -> Any:
    """``t`` in one chunk, one dictionary per text column: its number
    columns then reach NumPy without a copy (batch._num)."""
    return t.unify_dictionaries().combine_chunks()


def _keys(t: Any) -> np.ndarray:
    pid = t.column("pid").to_numpy().astype(np.int64)
    tid = t.column("tid").to_numpy().astype(np.int64)
    return (pid << 32) | tid


def sample_range(path: Path) -> tuple[int, int] | None:
    """The threads table's first and last ``t_ns``, from the Parquet
    statistics (None without them)."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path / "threads.parquet").metadata
    i = md.schema.to_arrow_schema().get_field_index("t_ns")
    lo = hi = None
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(i).statistics
        if st is None or not st.has_min_max:
            return None
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    return None if lo is None or hi is None else (int(lo), int(hi))


def summarize_streamed(run: Run, batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """``run.summary()``'s figures, reading the threads table in batches
    (equal to :func:`summary.summarize`'s: tests/conftest.py checks it on
    every run the tests make)."""
    return scan(run, batch_rows)[0]


def scan(
    run: Run, batch_rows: int = BATCH_ROWS, buckets: int = 0
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """The summary, and with ``buckets`` > 0 the timeline of each thread in
    about that many time buckets: pid, tid, start_ns, end_ns, wait, ns (the
    thread's time in that wait in that bucket; None for a run read whole)."""
    from .batch import Context
    from .exits import apply_exits
    from .findings import find
    from .findings.lock_waits import merge as merge_locks
    from .gil import gil_metrics_of, gil_ranges
    from .loops import _epoll_numbers
    from .run import _CATEGORIES, RELEASE_ROWS, categorical_frame
    from .summary import assemble, concat_facts, period_ns, summarize

    if not streamable(run):
        return summarize(run), None
    meta, maps, stacks, gil = run.meta, run.maps, run.stacks, run.gil
    processes = _processes(run)
    if "processes" not in run.__dict__:
        release_memory()  # the processes table's batches, read and dropped
    rng = sample_range(run.path)
    if rng is None:
        return summarize(run), None
    last_t = rng[1]
    ctx = Context(
        meta=meta,
        period=period_ns(meta),
        first_t=int(processes["t_ns"].min()) if len(processes) else 0,
        attached=meta.get("mode") != "run",
        ranges=gil_ranges(maps) if len(maps) else gil_ranges(None),
        epoll=_epoll_numbers(meta.get("machine")),
        need_times=gil is not None and len(gil) > 0,
        stacks=stacks,
        last_t=last_t,
        first_sample=rng[0],
    )
    if buckets > 0:
        ctx.origin_ns = int(meta["start_ns"])
        ctx.bucket_ns = max(ctx.period, -(-(last_t + ctx.period - ctx.origin_ns) // buckets))

    def frame(t: Any) -> pd.DataFrame:
        return categorical_frame(t, _CATEGORIES["threads"])

    try:
        parts = _reduce_all(table_batches(run.path, batch_rows), ctx, frame, batch_rows)
    except Unsorted:
        return summarize(run), None
    n = sum(p.rows for p in parts)
    if n >= RELEASE_ROWS:
        release_memory()  # the batches' buffers, before the findings' peak
    if not n:
        return summarize(run), None
    spans: dict[int, tuple[int, int]] = {}
    times: dict[int, np.ndarray] = {}
    for p in parts:
        for q, (a, b) in p.spans.items():
            old = spans.get(q)
            spans[q] = (a, b) if old is None else (min(old[0], a), max(old[1], b))
        for q, ts in p.times.items():
            times[q] = ts if q not in times else np.union1d(times[q], ts)
    gil_figures = gil_metrics_of(
        pd.concat([p.base for p in parts]),
        set().union(*(p.waited for p in parts)),
        spans,
        times,
        gil,
        maps,
        ctx.period,
        meta.get("gil_sources"),
    )
    loops = [lp for p in parts for lp in p.loops]
    facts = concat_facts([p.facts for p in parts])
    out = assemble(meta, facts, n, processes, run.procs, stacks, gil_figures, loops)
    last_rows = pd.concat([p.lasts for p in parts], ignore_index=True)
    apply_exits(out, meta, last_rows, processes, getattr(run, "exits", None))
    ev = _StreamEvidence(run, last_rows, processes, out)
    ev.__dict__["samples"] = _concat_columns(parts)
    ev.__dict__["span"] = (
        min(p.span[0] for p in parts),
        max(p.span[1] for p in parts),
        max(p.span[2] for p in parts),
    )
    ev.__dict__["time_of"] = pd.concat([p.time_of for p in parts])
    ev.__dict__["cpu_bins"] = _cpu_bins([p.cpu for p in parts])
    ev.__dict__["queued"] = pd.concat([p.queued for p in parts], ignore_index=True)
    ev.__dict__["lock_waits"] = merge_locks([p.locks for p in parts])
    out["findings"] = [f.to_dict() for f in find(ev)]
    shares = None
    if buckets > 0:
        shares = pd.concat([p.buckets for p in parts], ignore_index=True)
        shares["start_ns"] = ctx.origin_ns + shares.pop("bucket") * ctx.bucket_ns
        shares["end_ns"] = shares["start_ns"] + ctx.bucket_ns
        shares = shares[["pid", "tid", "start_ns", "end_ns", "wait", "ns"]]
    return out, shares


def _reduce_all(
    tables: Iterator[Any], ctx: Any, frame: Any, batch_rows: int = BATCH_ROWS
) -> list[Any]:
    """reduce_batch of every table, in order, ``WORKERS`` at a time in
    threads (NumPy and Arrow release the GIL for most of a batch's work),
    reading ahead no more than one batch per worker; a table of more than
    two batches' rows (one long thread) alone."""
    from concurrent.futures import ThreadPoolExecutor

    from .batch import reduce_batch

    workers = WORKERS or os.cpu_count() or 1
    head = list(itertools.islice(tables, 2))
    # (head is emptied as it is read: a table held here would stay in memory)
    todo = itertools.chain(_popping(head), tables)
    if workers <= 1 or len(head) < 2:  # (a small run: one batch, no threads)
        return [reduce_batch(t, ctx, frame) for t in todo]
    parts = []
    pending: deque[Any] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="circuit-batch") as pool:
        for t in todo:
            if t.num_rows > 2 * batch_rows:
                # one long thread (3.6M rows an hour at 1 kHz): alone, so
                # that two of them never add up in memory
                parts += [f.result() for f in pending]
                pending.clear()
                release_memory()  # the read's freed chunks (Arrow's pool keeps them)
                parts.append(reduce_batch(t, ctx, frame))
                del t
                release_memory()  # (glibc keeps a long batch's freed arrays)
                continue
            pending.append(pool.submit(reduce_batch, t, ctx, frame))
            if len(pending) >= workers:
                parts.append(pending.popleft().result())
        parts += [f.result() for f in pending]
    return parts


def _popping(items: list[Any]) -> Iterator[Any]:
    while items:
        yield items.pop(0)


def _processes(run: Run) -> pd.DataFrame:
    """The run's processes table, or the rows of it the summary reads
    (analysis/process_rows.py) when it is not loaded already."""
    import pyarrow.parquet as pq

    from .process_rows import REDUCE_ROWS, reduced_processes, reducible

    if "processes" in run.__dict__ or not reducible(run.meta):
        return run.processes
    if pq.read_metadata(run.path / "processes.parquet").num_rows < REDUCE_ROWS:
        return run.processes  # (small: a plain read costs less)
    return reduced_processes(run.path)


def release_memory() -> None:
    """Hand memory freed by a long read back to the OS: Arrow's pool, and
    glibc's heap (freed arrays of a few MB each stay in it, below glibc's
    mmap threshold, and count in the peak of what comes next)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None (another libc).  Looked up among the
    interpreter's own symbols: ctypes.util.find_library would fork a
    process the size of this one to run ldconfig."""
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


def _cpu_bins(parts: list[dict[str, Any]]) -> dict[str, Any]:
    nb = max(len(p["running"]) for p in parts)
    out: dict[str, Any] = {"queued_rows": sum(p["queued_rows"] for p in parts)}
    for k in ("running", "runnable"):
        v = np.zeros(nb, dtype=np.float64)
        for p in parts:
            v[: len(p[k])] += p[k]
        out[k] = v
    return out


def _concat_columns(parts: list[Any]) -> pd.DataFrame:
    """The batches' kept rows as one frame, a column at a time, each batch's
    column dropped once copied: the peak is the result and one column, not
    twice the rows."""
    frames = [p.kept for p in parts]
    cols = {}
    for c in list(frames[0].columns):
        cols[c] = (
            pd.concat([f.pop(c) for f in frames], ignore_index=True)
            if isinstance(frames[0][c].dtype, pd.CategoricalDtype)
            else np.concatenate([f.pop(c).to_numpy() for f in frames])
        )
    for p in parts:
        p.kept = None
    return pd.DataFrame(cols)


class _StreamEvidence(Evidence):
    """Evidence whose samples are only the rows the findings read
    (:func:`_keep`); rows with CPU counters come from the file on demand."""

    def __init__(
        self, run: Run, last_rows: pd.DataFrame, processes: pd.DataFrame, summary: dict[str, Any]
    ) -> None:
        super().__init__(
            run.meta,
            last_rows,
            processes,
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

    def queued_rows(self, pid: int, tid: int) -> pd.DataFrame:
        from .gil import classify_gil
        from .runnable import split_rows
        from .summary import with_durations

        df = _read_rows(self.run.path, pid, None, None, tid)
        if df.empty:
            return df[["t_ns"]].assign(dt_ns=pd.Series(dtype="int64"))
        if len(self.run.maps):
            df = classify_gil(df, self.run.maps)
        s = split_rows(with_durations(df, self.period))
        return s[eq(s["wait"], "runnable")][["t_ns", "dt_ns"]]


def _read_rows(
    path: Path, pid: int, lo: int | None, hi: int | None, tid: int | None = None
) -> pd.DataFrame:
    """The thread samples of ``pid`` (between ``lo`` and ``hi``), read with a filter."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .run import _CATEGORIES, categorical_frame

    cond = pc.field("pid") == pid
    if tid is not None:
        cond = cond & (pc.field("tid") == tid)
    if lo is not None:
        cond = cond & (pc.field("t_ns") >= lo)
    if hi is not None:
        cond = cond & (pc.field("t_ns") <= hi)
    t = pq.read_table(
        path / "threads.parquet", filters=cond, read_dictionary=_CATEGORIES["threads"]
    )
    return categorical_frame(t, _CATEGORIES["threads"])
