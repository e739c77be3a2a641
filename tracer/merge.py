"""The final merge: one table's parts into one sorted Parquet file, in bounded memory.

The parts hold rows in the order they were sampled; the merged table is
sorted by the table's ``SORT_KEYS`` (``pid, tid, t_ns`` for threads: one
thread's rows side by side compress to a few bytes each).  Sorting a whole
table at once holds all of it in memory, ~0.3 KB a row at the peak (the
Arrow columns, the sorted copy, the Parquet encoder): an hour of a
100-thread target at 100 Hz is 36M thread-samples, ~12 GB.

A table of more than ``MERGE_ROWS`` rows is therefore sorted in buckets,
ranges of its leading sort keys (:func:`bucket_keys`) of at most
``MERGE_ROWS`` rows each:

1. one read of the parts counts the rows of each key value;
2. a second read splits the rows into one spill stream per bucket, under a
   hidden ``.<table>.merge/`` folder of the run;
3. each bucket is sorted alone and appended to the Parquet file, in key order.

Buckets are disjoint key ranges in ascending order, so the sorted buckets
laid end to end are the sorted table.  Memory is bounded by ``MERGE_ROWS``
rows, or by the rows of a single key value when it has more (one thread
sampled for ~3 hours at 100 Hz).  A table that fits is sorted in memory
after one read.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .parts import DIR_MODE, STREAM_SUFFIX, Segment, StreamPart

# Rows of a table sorted in memory at once (~0.35 GB at the peak).
MERGE_ROWS = 1 << 20
# Rows per Parquet row group (zstd and dictionaries work per row group).
ROW_GROUP_ROWS = 1 << 20
# Rows gathered from the parts before they are split into buckets: fewer,
# larger batches in the spill streams.
SPLIT_ROWS = 1 << 16


def bucket_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The leading sort keys a bucket is a range of: those before ``t_ns``, or
    ``t_ns`` itself when it leads (the event tables)."""
    return keys[: keys.index("t_ns")] or ("t_ns",)


def merge_parts(
    pa: Any,
    pq: Any,
    files: list[Path],
    schema: Any,
    keys: tuple[str, ...],
    dest: Path,
    work: Path,
    ipc_options: Any,
) -> int:
    """Write the rows of the part ``files`` to the Parquet file ``dest``,
    sorted by ``keys``, with ``schema``; ``work`` is a folder for the spill
    streams (removed after).  Returns the number of rows."""
    import numpy as np  # loaded with pyarrow

    bkeys = bucket_keys(keys)
    counts: dict[int, int] = {}
    kept: list[Any] | None = []
    total = 0
    for t in _tables(pa, pq, files, schema):
        values, n = np.unique(_codes(np, t, bkeys), return_counts=True)
        for k, c in zip(values.tolist(), n.tolist(), strict=True):
            counts[k] = counts.get(k, 0) + c
        total += t.num_rows
        if kept is not None:
            kept.append(t)
            if total > MERGE_ROWS:
                kept = None  # too many to sort at once: read again, bucket by bucket
    with pq.ParquetWriter(str(dest), schema, compression="zstd") as out:
        if kept is not None:
            _write_sorted(pa, out, kept, schema, keys)
            return total
        try:
            spills = _split(pa, np, pq, files, schema, bkeys, _bounds(counts), work, ipc_options)
            for path in spills:
                part = StreamPart(pa, path)
                batches = list(part)
                if part.why is not None:
                    raise OSError(f"could not read back {path}: {part.why}")
                _write_sorted(
                    pa, out, [pa.Table.from_batches(batches, schema=schema)], schema, keys
                )
                path.unlink()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return total


def _tables(pa: Any, pq: Any, files: list[Path], schema: Any) -> Iterator[Any]:
    """The parts' whole batches, one at a time, as tables of ``schema`` (the
    parts' dictionary columns decoded to plain strings)."""
    for f in files:
        if f.suffix == STREAM_SUFFIX:
            # A torn tail (a failed truncate) ends the part where a reader
            # stops too; a file that is not a stream of the table yields nothing.
            batches: Iterator[Any] = iter(StreamPart(pa, f))
        else:
            batches = pq.ParquetFile(f).iter_batches()
        for b in batches:
            t = pa.Table.from_batches([b])
            yield t if t.schema.equals(schema) else t.cast(schema)


def _codes(np: Any, table: Any, bkeys: tuple[str, ...]) -> Any:
    """One int64 per row that sorts as the row's ``bkeys`` do (two keys: both
    int32 and not negative, as pid and tid are)."""
    cols = [_int64(np, table.column(k)) for k in bkeys]
    if len(cols) == 1:
        return cols[0]
    high, low = cols
    return (high << 32) | low


def _int64(np: Any, column: Any) -> Any:
    """An integer column (no nulls: keys never are) as int64, read from its
    buffers: ``to_numpy`` imports pandas, which the sampler never loads."""
    parts = []
    for a in column.chunks:
        dt = np.dtype(str(a.type))
        values = np.frombuffer(
            a.buffers()[1], dtype=dt, count=len(a), offset=a.offset * dt.itemsize
        )
        parts.append(values.astype(np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _bounds(counts: dict[int, int]) -> list[int]:
    """The first key value of each bucket: consecutive values, at most
    MERGE_ROWS rows a bucket unless one value alone has more."""
    bounds: list[int] = []
    n = 0
    for k in sorted(counts):
        c = counts[k]
        if not bounds or (n and n + c > MERGE_ROWS):
            bounds.append(k)
            n = 0
        n += c
    return bounds


def _split(
    pa: Any,
    np: Any,
    pq: Any,
    files: list[Path],
    schema: Any,
    bkeys: tuple[str, ...],
    bounds: list[int],
    work: Path,
    ipc_options: Any,
) -> list[Path]:
    """Append every row to its bucket's spill stream; the streams, in bucket order."""
    shutil.rmtree(work, ignore_errors=True)  # a merge killed before left it
    work.mkdir(mode=DIR_MODE)
    segs = [
        Segment(pa, work / f"{i:06d}{STREAM_SUFFIX}", schema, ipc_options)
        for i in range(len(bounds))
    ]
    first = np.asarray(bounds, dtype=np.int64)

    def split(tables: list[Any]) -> None:
        t = pa.concat_tables(tables)
        which = np.searchsorted(first, _codes(np, t, bkeys), side="right") - 1
        order = np.argsort(which, kind="stable")  # stable: each bucket keeps the rows' order
        t = t.take(pa.Array.from_buffers(pa.int64(), len(order), [None, pa.py_buffer(order)]))
        cuts = np.searchsorted(which[order], np.arange(len(segs) + 1))
        for i in np.flatnonzero(np.diff(cuts)).tolist():
            for b in t.slice(cuts[i], cuts[i + 1] - cuts[i]).to_batches():
                segs[i].append(b)

    pending: list[Any] = []
    n = 0
    for t in _tables(pa, pq, files, schema):
        pending.append(t)
        n += t.num_rows
        if n >= SPLIT_ROWS:
            split(pending)
            pending, n = [], 0
    if pending:
        split(pending)
    return [s.path for s in segs if s.whole]


def _write_sorted(pa: Any, out: Any, tables: list[Any], schema: Any, keys: tuple[str, ...]) -> None:
    # (from_batches, not schema.empty_table(): that imports pandas)
    table = pa.concat_tables(tables) if tables else pa.Table.from_batches([], schema=schema)
    out.write_table(table.sort_by([(k, "ascending") for k in keys]), row_group_size=ROW_GROUP_ROWS)
