"""Writes a run folder incrementally, so a killed tracer still leaves a run.

While sampling, each table is an append-only Arrow IPC stream under
``<table>.parts/NNNNNN.arrows``: each flush (at least once a second) appends
one record batch per table that has rows.  A SIGKILL at any moment can cut
only the batch being written short, and readers keep every whole batch before
it (:mod:`.parts`).  A failed write (disk full) truncates the stream back to
its last whole batch and leaves it; a later flush starts the next file.
Finalising merges the parts into ``<table>.parquet`` (which appears by
rename); ``meta.json`` says ``"finalized": false`` until the end.
"""

from __future__ import annotations

import array
import itertools
import json
import operator
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from circuit.errors import not_a_run

from .merge import merge_parts
from .parts import DIR_MODE, FILE_MODE, STREAM_SUFFIX, Encoded, Segment, part_files, part_schema
from .schema import META_FILE, SORT_KEYS, TABLES, arrow_schema
from .sink import TickBuffers

# Arrow type name -> array.array typecode for the integer columns of the schema.
_INT_CODES = {
    "int8": "b",
    "int16": "h",
    "int32": "i",
    "int64": "q",
    "uint8": "B",
    "uint16": "H",
    "uint32": "I",
    "uint64": "Q",
}


def _column(pa: Any, values: Iterable, dtype: Any) -> Any:
    """One Arrow array from a column of Python values, without ``pa.array``.

    ``pa.array`` asks pyarrow's pandas shim whether the values are a pandas
    object, and that imports pandas (~0.3 s of CPU, ~40 MB) into the sampler
    in the middle of the target's run.  Building the buffers ourselves keeps
    pandas out and is no slower (strings: faster, they repeat).
    """
    code = _INT_CODES.get(str(dtype))
    try:
        if code is not None:
            buf = array.array(code, values)
            return pa.Array.from_buffers(dtype, len(buf), [None, pa.py_buffer(buf)])
        if dtype == pa.string():
            # Names, states and waits repeat: encode each distinct value once.
            # (Not dictionary + take: that imports pyarrow.compute, ~0.1 s.)
            enc = {v: v.encode("utf-8") for v in set(values)}
            parts = list(map(enc.__getitem__, values))
            offsets = array.array("i", [0])
            offsets.extend(itertools.accumulate(map(len, parts)))
            return pa.Array.from_buffers(
                dtype, len(parts), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(parts))]
            )
        if dtype == pa.bool_():
            flags = array.array("B", [1 if v else 0 for v in values])
            bits = bytearray((len(flags) + 7) // 8)
            for i, v in enumerate(flags):
                if v:
                    bits[i >> 3] |= 1 << (i & 7)
            return pa.Array.from_buffers(dtype, len(flags), [None, pa.py_buffer(bytes(bits))])
    except (TypeError, AttributeError):
        pass  # a None or an odd value: let pyarrow sort it out
    return pa.array(values, type=dtype)


def _thread_arrays(
    pa: Any, batches: list[tuple[int, list[tuple]]], schema: Any
) -> list[Any] | None:
    """Arrow arrays for a threads part (``schema``: its string columns are
    dictionaries) from ``(t_ns, rows)`` batches, one per process sample; None
    if they hold no rows.

    Idle threads repeat themselves: the /proc backend hands over the very same
    tuple for a thread that did not run, and the very same list for a process
    none of whose threads ran, so a second of a 1000-thread target is
    ~100,000 rows but ~1000 distinct tuples in a few distinct lists.  The
    Python work is a step per batch and a step per row of each distinct list;
    columns are built for the distinct rows only and expanded to every row
    with numpy indexing (for a dictionary column: its indices).  The flush is
    time the sampling loop stands still.
    """
    import numpy as np  # already loaded by pyarrow

    fields = list(schema)
    # Which distinct list each batch is.
    first: dict[int, int] = {}
    lists: list[list[tuple]] = []
    which: list[int] = []
    for _, rows in batches:
        k = first.setdefault(id(rows), len(lists))
        if k == len(lists):
            lists.append(rows)
        which.append(k)
    lens = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    of_batch = np.array(which, dtype=np.int64)
    counts = lens[of_batch]  # rows per batch
    n = int(counts.sum())
    if n == 0:
        return None
    stamps = np.fromiter((t for t, _ in batches), dtype=np.int64, count=len(batches))
    t_ns = np.repeat(stamps, counts)
    out = [pa.Array.from_buffers(fields[0].type, n, [None, pa.py_buffer(t_ns)])]
    flat = list(itertools.chain.from_iterable(lists))  # the rows of the distinct lists
    at, firsts = _distinct_rows(np, lists, len(flat))
    if len(firsts) * 2 <= n:
        # Row r of batch b is row starts[which[b]] + r of ``flat``.
        starts = (np.cumsum(lens) - lens)[of_batch]
        out_starts = np.cumsum(counts) - counts
        idx = at[np.repeat(starts - out_starts, counts) + np.arange(n)]
        uniq = list(map(flat.__getitem__, firsts.tolist()))
        for col, field in zip(zip(*uniq, strict=True), fields[1:], strict=True):
            if pa.types.is_dictionary(field.type):
                arr = _dictionary(pa, np, col, field.type, idx)
            else:
                small = _column(pa, col, field.type)
                odd = small.null_count or small.offset or str(small.type) not in _EXPANDABLE
                arr = None if odd else _expand(pa, np, small, idx, n)
            if arr is None:
                break  # an odd value: take the plain path
            out.append(arr)
        else:
            return out
        del out[1:]
    # Mostly distinct rows (busy threads): transpose them all.
    rows = list(itertools.chain.from_iterable(b for _, b in batches))
    cols = zip(*rows, strict=True)
    return out + [_plain(pa, np, c, f.type) for c, f in zip(cols, fields[1:], strict=True)]


def _distinct_rows(np: Any, lists: list[list[tuple]], total: int) -> tuple[Any, Any]:
    """The distinct row objects of ``lists`` (``total`` rows in all).

    Returns (for each row of the lists, in order, the number of its distinct
    row; for each distinct row, the position of its first appearance).

    A thread that did not run is the same tuple as in its process's previous
    sample, at the same place in the list: a long list is compared with its
    process's previous one position by position (one C-level pass), and only
    the rows that differ are looked up by id().  Short lists (a few threads)
    are looked up whole, a run of them in one pass: numpy calls per list
    would cost more than they save.
    """
    seen: dict[int, int] = {}  # id(row) -> position of its first appearance
    codes = np.empty(total, dtype=np.int64)  # the first appearance of each row

    def look_up(rows: Iterable, start: int, n: int) -> None:
        found = map(seen.setdefault, map(id, rows), itertools.count(start))
        codes[start : start + n] = np.fromiter(found, dtype=np.int64, count=n)

    last: dict[Any, tuple[list[tuple], Any]] = {}  # pid -> (list, its codes)
    run: list[list[tuple]] = []  # short lists not looked up yet, from run_start on
    base = run_start = 0
    for rows in lists:
        n = len(rows)
        if n < _POSITIONAL:
            run.append(rows)
            base += n
            continue
        if run:
            look_up(itertools.chain.from_iterable(run), run_start, base - run_start)
            run = []
        key = rows[0][0]  # the pid
        prev, prev_codes = last.get(key, ((), None))
        if len(prev) == n:
            moved = ~np.fromiter(map(operator.is_, rows, prev), dtype=bool, count=n)
            mine = prev_codes.copy()
            where = np.flatnonzero(moved)
            if len(where):
                changed = map(id, itertools.compress(rows, moved.tolist()))
                found = map(seen.setdefault, changed, (where + base).tolist())
                mine[where] = np.fromiter(found, dtype=np.int64, count=len(where))
            codes[base : base + n] = mine
        else:
            look_up(rows, base, n)
        last[key] = (rows, codes[base : base + n])
        base += n
        run_start = base
    if run:
        look_up(itertools.chain.from_iterable(run), run_start, base - run_start)
    firsts = np.fromiter(seen.values(), dtype=np.int64, count=len(seen))
    number = np.empty(total, dtype=np.int64)
    number[firsts] = np.arange(len(firsts))
    return number[codes], firsts


_POSITIONAL = 64  # rows: a list this long is compared with its process's previous one


_EXPANDABLE = ("int16", "int32", "int64")


def _expand(pa: Any, np: Any, small: Any, idx: Any, n: int) -> Any:
    """``small`` (one value per distinct row) taken at ``idx``, without pyarrow.compute."""
    t = small.type
    # Our arrays have no nulls and no offset: the values buffer is the data.
    values = np.frombuffer(small.buffers()[1], dtype=np.dtype(str(t)), count=len(small))[idx]
    return pa.Array.from_buffers(t, n, [None, pa.py_buffer(np.ascontiguousarray(values))])


def _dictionary(pa: Any, np: Any, values: Iterable, dtype: Any, idx: Any = None) -> Any:
    """A dictionary array of ``values`` (taken at ``idx`` if given), each
    distinct value once in its dictionary; None if a value is odd (None...).
    Without pyarrow.compute (``dictionary_encode`` imports it)."""
    codes: dict[Any, int] = {}
    try:
        per_value = array.array("i", [codes.setdefault(v, len(codes)) for v in values])
    except TypeError:
        return None  # unhashable
    words = _column(pa, list(codes), dtype.value_type)
    if words.null_count or words.offset:
        return None
    ind = np.frombuffer(per_value, dtype=np.int32, count=len(per_value))
    if idx is not None:
        ind = ind[idx]
    indices = pa.Array.from_buffers(dtype.index_type, len(ind), [None, pa.py_buffer(ind)])
    return pa.DictionaryArray.from_arrays(indices, words)


def _plain(pa: Any, np: Any, values: Iterable, dtype: Any) -> Any:
    """One column of Python values as an array of ``dtype`` (maybe a dictionary)."""
    if not pa.types.is_dictionary(dtype):
        return _column(pa, values, dtype)
    arr = _dictionary(pa, np, values, dtype)
    if arr is None:  # a None or an odd value: pyarrow's encoding (imports pyarrow.compute)
        arr = _column(pa, values, dtype.value_type).dictionary_encode()
    return arr


def write_json_atomic(path: Path, data: dict[str, Any], mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` as JSON in one step (a reader or a crash
    sees the old file or the new one); created with ``mode`` (less the umask)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)  # a full disk keeps the previous, whole file
        raise


def _create_private(path: Path) -> None:
    """Create ``path`` 0600 before Arrow writes into it: Arrow creates files
    0644, and a tracer killed mid-write would leave that behind."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE))


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except OSError:
        pass


def prepare_run_dir(path: Path, force: bool) -> Path:
    """Create the run folder (or check it may be replaced); raise OSError/FileExistsError."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(not_a_run(path, "a file, not a folder") + "; not writing into it")
        if any(path.iterdir()):
            if not _looks_like_a_run(path):
                # Never offer --force for a folder that is not ours.
                raise FileExistsError(not_a_run(path) + "; not writing into it")
            if not force:
                raise FileExistsError(f"{path} holds a circuit run (use --force to overwrite it)")
            _clear_run_dir(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    # Fail now, before the target starts, if we cannot write here.
    probe = path / ".write-test"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    probe.unlink()
    return path


def _looks_like_a_run(path: Path) -> bool:
    return (path / META_FILE).exists() or any(path.glob("*.parquet"))


def _clear_run_dir(path: Path) -> None:
    import shutil

    if not _looks_like_a_run(path):
        # Refuse to wipe a folder that does not look like one of ours.
        raise FileExistsError(not_a_run(path) + "; not writing into it")
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class RunWriter:
    """The sink (tracer/sink.py) that writes a run folder."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        import pyarrow as pa  # imported before the target starts, never on the hot path
        import pyarrow.ipc  # the parts (pa.ipc; pyarrow loads it anyway)
        import pyarrow.parquet as pq

        self.pa, self.pq = pa, pq
        self.path = Path(path)
        self.meta = meta
        self.schemas = {name: arrow_schema(name) for name in TABLES}
        self.part_schemas = {n: part_schema(pa, n, s) for n, s in self.schemas.items()}
        self.buffers: dict[str, list[tuple]] = {name: [] for name in TABLES}
        # Thread rows arrive as (t_ns, [row, row, ...]) per process sample: the
        # timestamp is added column-wise at flush, not tuple-wise per row.
        self.thread_batches: list[tuple[int, list[tuple]]] = []
        # Each table's current part, and the number of its next one.
        self.segments: dict[str, Segment] = {}
        # LZ4 on the batches' buffers: idle threads' rows repeat, ~7x smaller
        # parts for less CPU than writing them uncompressed (zstd: ~6x the
        # CPU for ~20% less).  On this thread, not pyarrow's thread pool.
        self.ipc_options = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)
        self.next_segment = dict.fromkeys(TABLES, 0)
        self.last_flush = time.monotonic()
        # Given each record batch once it is written: (table, batch).
        self.taps: list[Callable[[str, Any], None]] = []
        write_json_atomic(self.path / META_FILE, self.meta)
        self._warm_up()

    def _warm_up(self) -> None:
        """Write one throwaway Parquet file and IPC batch in memory, before the target starts.

        pyarrow initialises itself lazily on its first write (~0.4 s measured
        for Parquet, ~0.5 ms for IPC): paid here, not as a stall in the first
        flush, one second into the run (IPC), or in the final merge (Parquet).
        """
        import io

        pa = self.pa
        schema = self.schemas["fds"]  # ints, strings and a bool: every column kind we write
        arrays = [_column(pa, ["" if f.type == pa.string() else 0], f.type) for f in schema]
        table = pa.Table.from_arrays(arrays, schema=schema)
        self.pq.write_table(table, io.BytesIO(), compression="zstd")
        stream = pa.ipc.new_stream(Encoded(), schema, options=self.ipc_options)
        stream.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
        threads = self.part_schemas["threads"]
        row = tuple("" if "string" in str(f.type) else 0 for f in list(threads)[1:])
        for batches in ([(0, [row])], [(0, [row])] * 2):  # the plain and the numpy path
            arrays = _thread_arrays(pa, batches, threads)
            stream = pa.ipc.new_stream(Encoded(), threads, options=self.ipc_options)
            stream.write_batch(pa.RecordBatch.from_arrays(arrays, schema=threads))

    # -- appending -----------------------------------------------------------

    def add_threads(self, t_ns: int, rows: list[tuple]) -> None:
        self.thread_batches.append((t_ns, rows))

    def add(self, table: str, row: tuple) -> None:
        self.buffers[table].append(row)

    def tick_buffers(self) -> TickBuffers:
        return TickBuffers(self.buffers["processes"], self.thread_batches, self.buffers["gil"])

    # -- flushing ------------------------------------------------------------

    def flush(self) -> None:
        """Append one record batch to each table that has rows.

        On a write error (OSError: disk full, read-only...) the rows of that
        table are dropped, its part is cut back to its last whole batch and
        left, and the error propagates (the tables after it keep their rows
        for the next flush); what was flushed before stays readable, and a
        later flush starts a new part.
        """
        self.last_flush = time.monotonic()
        # The lists are emptied in place, not replaced: the C tick holds them
        # (tick_buffers).
        if self.thread_batches:
            batches = self.thread_batches.copy()
            self.thread_batches.clear()
            arrays = _thread_arrays(self.pa, batches, self.part_schemas["threads"])
            if arrays is not None:
                self._append("threads", arrays)
        for name, buf in self.buffers.items():
            if buf:
                rows = buf.copy()
                buf.clear()
                schema = self.schemas[name]
                columns = zip(*rows, strict=True)
                arrays = [_column(self.pa, c, f.type) for c, f in zip(columns, schema, strict=True)]
                self._append(name, arrays)

    def _append(self, name: str, arrays: list[Any]) -> None:
        batch = self.pa.RecordBatch.from_arrays(arrays, schema=self.part_schemas[name])
        seg = self.segments.get(name)
        if seg is None:
            parts = self.path / f"{name}.parts"
            parts.mkdir(mode=DIR_MODE, exist_ok=True)
            n = self.next_segment[name]
            self.next_segment[name] = n + 1
            seg = self.segments[name] = Segment(
                self.pa,
                parts / f"{n:06d}{STREAM_SUFFIX}",
                self.part_schemas[name],
                self.ipc_options,
            )
        try:
            seg.append(batch)
        except BaseException:
            # The part was cut back to its last whole batch; were the disk
            # to refuse even that, its torn tail is ignored by readers.  The
            # next flush starts a new part (with its own header).
            del self.segments[name]
            raise
        for tap in list(self.taps):
            try:
                tap(name, batch)
            except Exception:  # a reader of the rows must never cost the run
                self.taps.remove(tap)

    # -- finalising ----------------------------------------------------------

    def finalize(self, meta_updates: dict[str, Any]) -> None:
        self.flush()
        for name in TABLES:
            self._compact(name)
        self.meta.update(meta_updates)
        self.meta["finalized"] = True
        write_json_atomic(self.path / META_FILE, self.meta)

    def write_meta(self) -> None:
        write_json_atomic(self.path / META_FILE, self.meta)

    def _compact(self, name: str) -> None:
        parts_dir = self.path / f"{name}.parts"
        final = self.path / f"{name}.parquet"
        tmp = self.path / f".{name}.parquet.tmp"
        try:
            _create_private(tmp)
            merge_parts(
                self.pa,
                self.pq,
                part_files(parts_dir),
                self.schemas[name],
                SORT_KEYS[name],
                tmp,
                self.path / f".{name}.merge",
                self.ipc_options,
            )
            os.replace(tmp, final)
        except BaseException:
            _discard(tmp)  # the parts stay, so the table stays readable
            raise
        if parts_dir.exists():
            for leftover in parts_dir.iterdir():
                leftover.unlink()
            parts_dir.rmdir()
