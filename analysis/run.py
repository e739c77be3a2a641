"""Loading run folders into pandas."""

from __future__ import annotations

import functools
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from circuit.errors import CircuitError, not_a_run
from circuit.tracer.parts import STREAM_SUFFIX, part_files, read_stream
from circuit.tracer.schema import (
    ADDED_TABLES,
    MARKS_FILE,
    META_FILE,
    SUPPORTED_VERSIONS,
    TABLES,
    arrow_schema,
)

_CATEGORIES = {
    "threads": ["name", "state", "wait", "wchan"],
    "fds": ["event", "kind", "proto"],
}


class RunFormatError(CircuitError):
    """The folder is not a (readable) circuit run."""


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RunFormatError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise RunFormatError(not_a_run(path, "a file, not a folder"))
    mfile = path / META_FILE
    if not mfile.exists():
        raise RunFormatError(not_a_run(path, f"no {META_FILE}"))
    try:
        meta = json.loads(mfile.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFormatError(f"{mfile} is corrupted: {e}") from None
    except OSError as e:
        raise RunFormatError(f"cannot read {mfile}: {e.strerror}") from None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise RunFormatError(f"{mfile} has no format_version: not a circuit run")
    version = meta["format_version"]
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise RunFormatError(
            f"{mfile}: format_version {version!r} is not supported by this "
            f"circuit (reads {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade circuit"
        )
    for key, types in _META_TYPES.items():
        v = meta.get(key)
        # bool is an int to Python, never a count or a time to us
        if v is not None and (
            not isinstance(v, types) or (isinstance(v, bool) and bool not in types)
        ):
            raise RunFormatError(
                f"{mfile} is corrupted: {key!r} is a {type(v).__name__}, "
                f"expected {' or '.join(t.__name__ for t in types)}"
            )
    return meta


# Fields the analysis reads, with the types it can use (None is always allowed).
_META_TYPES: dict[str, tuple[type, ...]] = {
    "mode": (str,),
    "finalized": (bool,),
    "command": (list,),
    "warnings": (list,),
    "start_ns": (int,),
    "end_ns": (int,),
    "root_pid": (int,),
    "samples": (int,),
    "thread_samples": (int,),
    "missed_deadlines": (int,),
    "wall_s": (int, float),
    "rate_hz_achieved": (int, float),
    "rate_hz_requested": (int, float),
    "sampler_cpu_s": (int, float),
    "exit_code": (int,),
}


def _check_columns(f: Path, schema) -> None:
    """Raise ArrowInvalid/OSError unless ``f`` is Parquet with every column of ``schema``.

    Reads the footer only.  (read_table(schema=...) alone would fill absent
    columns with nulls.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    have = set(pq.ParquetFile(f).schema_arrow.names)
    missing = [c for c in schema.names if c not in have]
    if missing:
        raise pa.ArrowInvalid(f"columns {', '.join(missing)} are missing")


def _check_tables(path: Path) -> None:
    """A finalized run has every table, each a whole Parquet file: fail fast,
    naming the file, rather than in the middle of an analysis."""
    import pyarrow as pa

    for name in TABLES:
        f = path / f"{name}.parquet"
        if not f.exists():
            if name in ADDED_TABLES:
                continue  # a run from before the table existed
            raise RunFormatError(f"{f} is missing from a finalized run")
        try:
            _check_columns(f, arrow_schema(name))
        except (OSError, pa.ArrowInvalid) as e:
            why = " ".join(str(e).split())
            raise RunFormatError(f"{f} is corrupted or truncated: {why}") from None


# Reading a table this long hands the pool's freed read buffers back to the OS.
RELEASE_ROWS = 1_000_000


def _read_table(path: Path, name: str, warnings: list[str], finalized: bool) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(name)
    single = path / f"{name}.parquet"
    files = [single] if single.exists() else part_files(path / f"{name}.parts")
    if not files and finalized and name not in ADDED_TABLES:
        raise RunFormatError(f"{single} is missing from a finalized run")
    cats = _CATEGORIES.get(name, [])
    tables = []
    for f in files:
        try:
            if f.suffix == STREAM_SUFFIX:
                table = _read_stream_part(pa, f, name, schema, cats, warnings)
                if table is not None:
                    tables.append(table)
                continue
            # Read the repetitive string columns as Arrow dictionaries (Parquet
            # stores them so): to_pandas then makes categoricals directly,
            # instead of 1M Python strings and an astype("category").
            tables.append(_read_file(pq, f, schema, cats))
        except (OSError, pa.ArrowInvalid) as e:
            why = " ".join(str(e).split())  # one line
            if f is single:
                raise RunFormatError(f"{f} is corrupted or truncated: {why}") from None
            warnings.append(f"skipped unreadable part {f.name} of {name}: {why}")
    if sum(t.num_rows for t in tables) == 0:
        return _empty_frame(name).copy()
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if cats and files[0] is not single:
        # Parts (and a stream's batches) each have their own dictionaries:
        # unify them for one categorical.
        table = table.unify_dictionaries()
    big = table.num_rows >= RELEASE_ROWS
    df = categorical_frame(table, cats)
    if big:
        from .query import release_memory

        release_memory()  # the read's buffers, back to the OS
    return df


@functools.cache
def _empty_frame(name: str) -> pd.DataFrame:
    """Table ``name`` with no rows (copied by callers: frames are mutable)."""
    df = arrow_schema(name).empty_table().to_pandas()
    for c in _CATEGORIES.get(name, []):
        df[c] = df[c].astype("category")
    return df


def categorical_frame(table: Any, cats: list[str]) -> pd.DataFrame:
    """An Arrow table as a DataFrame, the ``cats`` columns categoricals with
    the same categories, in the same (sorted) order, as astype("category") gives."""
    # (split_blocks and self_destruct: no consolidation copy, and each
    # column's Arrow memory freed as it is converted; the table is not used
    # after this)
    df = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    for c in cats:
        col = df[c]
        if not isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype("category")
        df[c] = col.cat.set_categories(sorted(col.cat.categories))
    return df


def _read_file(pq: Any, f: Path, schema: Any, cats: list[str]) -> Any:
    """Our columns of ``f``, in schema order, ``cats`` as dictionaries
    (ParquetFile: read_table's dataset set-up costs more than a run's small
    tables themselves).
    Raises ArrowInvalid if a column is missing (read_table(schema=...)
    would fill it with nulls)."""
    import pyarrow as pa

    # pre_buffer=False: the reader's buffered ranges would otherwise stay in
    # Arrow's pool after the read, several times the table's size.
    pf = pq.ParquetFile(f, pre_buffer=False, read_dictionary=cats or None)
    have = set(pf.schema_arrow.names)
    missing = [c for c in schema.names if c not in have]
    if missing:
        raise pa.ArrowInvalid(f"columns {', '.join(missing)} are missing")
    t = pf.read(columns=list(schema.names))
    if not cats and not t.schema.equals(schema):
        t = t.cast(schema)
    return t


def _read_stream_part(
    pa: Any, f: Path, name: str, schema: Any, cats: list[str], warnings: list[str]
) -> Any:
    """The whole batches of one IPC stream part as a table (None: no rows), shaped
    like a Parquet part as _read_file reads it: our columns in schema order,
    ``cats`` dictionary-encoded (parts of the threads table store them so
    already), the other columns plain.  Raises ArrowInvalid if it is not a
    stream of this table."""
    have, batches, why = read_stream(pa, f)
    if have is None:
        if why is not None:
            raise pa.ArrowInvalid(why)
        return None  # killed before its first batch was written: nothing in it
    missing = [c for c in schema.names if c not in have.names]
    if missing:
        raise pa.ArrowInvalid(f"columns {', '.join(missing)} are missing")
    if why is not None:
        warnings.append(
            f"part {f.name} of {name} ends in a batch cut short (the tracer was killed "
            f"while writing it, or is writing it now): kept the {len(batches)} whole "
            f"batches before it ({why})"
        )
    if not batches:
        return None
    table = pa.Table.from_batches(batches, schema=have).select(schema.names)
    for c in cats:
        i = table.schema.get_field_index(c)
        if not pa.types.is_dictionary(table.schema.field(i).type):
            table = table.set_column(i, c, table.column(i).dictionary_encode())
    want = pa.schema(
        [
            pa.field(f.name, pa.dictionary(pa.int32(), f.type)) if f.name in cats else f
            for f in schema
        ]
    )
    return table if table.schema.equals(want) else table.cast(want)


class Run:
    """One run folder: ``meta`` plus lazily loaded DataFrames."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = _read_meta(self.path)
        self.meta.setdefault("path", str(self.path))  # the summary's `run`, profiles' base
        self.load_warnings: list[str] = []
        self.finalized = bool(self.meta.get("finalized"))
        if self.finalized:
            _check_tables(self.path)
        if not self.finalized:
            self.load_warnings.append(
                "run was not finalized (tracer killed or still running): data up to the last flush"
            )

    @cached_property
    def threads(self) -> pd.DataFrame:
        """Thread samples; futex waits on the GIL say ``gil`` (docs/pyspy.md)."""
        df = _read_table(self.path, "threads", self.load_warnings, self.finalized)
        if not self.finalized and len(df):
            df = self._up_to_the_last_process_sample(df)
        if len(df) and len(self.maps):
            from .gil import classify_gil

            df = classify_gil(df, self.maps)
        return df

    def _up_to_the_last_process_sample(self, threads: pd.DataFrame) -> pd.DataFrame:
        """A flush appends the thread rows, then the process rows: a tracer
        killed (or a disk full) between the two leaves thread rows whose
        process rows are not there.  Those go, so that every thread sample
        has its process sample, as in a finalised run."""
        procs = self.processes
        last = int(procs["t_ns"].max()) if len(procs) else None
        late = threads["t_ns"] > last if last is not None else threads["t_ns"].notna()
        n = int(late.sum())
        if not n:
            return threads
        self.load_warnings.append(
            f"left out {n} thread samples taken after the last process sample "
            "(the tracer stopped between writing the two tables)"
        )
        return threads[~late].reset_index(drop=True)

    @cached_property
    def processes(self) -> pd.DataFrame:
        return _read_table(self.path, "processes", self.load_warnings, self.finalized)

    @cached_property
    def fds(self) -> pd.DataFrame:
        return _read_table(self.path, "fds", self.load_warnings, self.finalized)

    @cached_property
    def procs(self) -> pd.DataFrame:
        return _read_table(self.path, "procs", self.load_warnings, self.finalized)

    @cached_property
    def maps(self) -> pd.DataFrame:
        return _read_table(self.path, "maps", self.load_warnings, self.finalized)

    @cached_property
    def gil(self) -> pd.DataFrame:
        """The GIL state read from each interpreter's memory (empty where it could not be)."""
        return _read_table(self.path, "gil", self.load_warnings, self.finalized)

    @cached_property
    def exits(self) -> pd.DataFrame:
        """The kernel's final figures for each task of the tree that exited
        while circuit listened (empty without root, or in older runs)."""
        return _read_table(self.path, "exits", self.load_warnings, self.finalized)

    @cached_property
    def stacks(self) -> pd.DataFrame:
        """py-spy dumps, one row per thread per dump (see docs/pyspy.md)."""
        from .pyspy import load_stacks

        return load_stacks(self.path, self.load_warnings)

    @cached_property
    def marks(self) -> pd.DataFrame:
        rows = []
        f = self.path / MARKS_FILE
        if f.exists():
            for line in f.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                fields = rec.pop("fields", None) or {}
                rows.append({**rec, **{f"field_{k}": v for k, v in fields.items()}})
        df = pd.DataFrame(rows)
        if df.empty:
            df = pd.DataFrame({"t_ns": pd.Series(dtype="int64"), "pid": [], "tid": [], "name": []})
        fields = [c for c in df.columns if c.startswith("field_")]
        if fields:
            # A field some marks lack: nullable types, so integers stay
            # integers (task 1, not 1.0) beside the missing values.
            df[fields] = df[fields].convert_dtypes()
        return df

    @property
    def start_ns(self) -> int:
        return int(self.meta.get("start_ns", 0))

    def summary(self) -> dict[str, Any]:
        """``circuit summary --json``'s figures.  A finalized run whose
        threads are not loaded yet is read in batches (analysis/query.py:
        bounded memory, the same figures)."""
        from .summary import summarize

        if "threads" in self.__dict__:
            return summarize(self)
        from .query import summarize_streamed

        return summarize_streamed(self)

    def __repr__(self) -> str:
        m = self.meta
        cmd = " ".join(m.get("command") or [])
        return (
            f"<circuit.Run {self.path} mode={m.get('mode')} wall={m.get('wall_s', '?')}s "
            f"samples={m.get('samples', '?')} cmd={cmd!r}>"
        )

    def _repr_html_(self) -> str:
        """Jupyter: the summary, with one bar per thread showing where its time went."""
        import html

        from .names import display_name
        from .style import WAIT_COLORS

        s = self.summary()
        rows = []
        for t in sorted(s["threads"], key=lambda t: -t["cpu_s"])[:50]:
            total = sum(t["time_by_wait"].values()) or 1.0
            bar = "".join(
                f"<span title='{w} {v:.3f} s' style='display:inline-block;height:10px;"
                f"width:{200 * v / total:.1f}px;background:{WAIT_COLORS.get(w, '#000')}'></span>"
                for w, v in t["time_by_wait"].items()
                if v > 0
            )
            rows.append(
                f"<tr><td>{t['pid']}</td><td>{t['tid']}</td>"
                f"<td>{html.escape(display_name(t['name'], t.get('python_name')))}</td>"
                f"<td>{t['cpu_s']:.3f}</td><td style='white-space:nowrap'>{bar}</td>"
                f"<td>{html.escape(_top_wait(t['time_by_wait']))}</td></tr>"
            )
        legend = " ".join(
            f"<span style='color:{c}'>&#9632;</span>&nbsp;{w}" for w, c in WAIT_COLORS.items()
        )
        fds = "; ".join(
            f"pid {p['pid']}: "
            + html.escape(", ".join(f"{k} {v}" for k, v in p["fds_peak_by_kind"].items() if v))
            for p in s["processes"][:10]
        )
        cmd = html.escape(" ".join(self.meta.get("command") or []))
        more = f"<br>({len(s['threads']) - 50} more threads)" if len(s["threads"]) > 50 else ""
        return (
            f"<b>circuit run</b> <code>{html.escape(str(self.path))}</code>: <code>{cmd}</code><br>"
            f"wall {s['wall_s']:.3f} s · CPU user {s['cpu_user_s']:.3f} s, system "
            f"{s['cpu_system_s']:.3f} s · parallelism {s['parallelism']:.2f} · "
            f"{s['samples']} samples at {s['rate_hz']:.0f} Hz<br>"
            f"peak fds: {fds or 'n/a'}"
            "<table><tr><th>pid</th><th>tid</th><th>name</th><th>CPU s</th>"
            f"<th>time by wait reason</th><th>mostly</th></tr>{''.join(rows)}</table>"
            f"<small>{legend}</small>{more}"
        )


def _top_wait(by_wait: dict[str, float]) -> str:
    if not by_wait:
        return ""
    k = max(by_wait, key=lambda w: by_wait[w])
    return f"{k} ({by_wait[k]:.2f} s)"


def load(path: str | Path) -> Run:
    return Run(path)
