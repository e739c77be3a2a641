"""Many runs as one dataset: ``circuit.load_many(PATHS_OR_GLOB)``.

A run folder is plain Parquet plus ``meta.json`` (docs/format.md), so many
runs are many files of one schema: :class:`Runs` gives each table of all
the runs with a ``run`` column (the folder's label), their summaries side
by side, and the file lists for an engine that reads Parquet itself
(DuckDB, Spark, Dask: docs/longruns.md).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from circuit.errors import CircuitError
from circuit.tracer.schema import META_FILE, TABLES

from .run import Run

# Summary figures :meth:`Runs.summary` tabulates, one row per run.
SUMMARY_COLUMNS = (
    "wall_s",
    "cpu_s",
    "parallelism",
    "samples",
    "thread_samples",
    "rate_hz",
    "exit_code",
)


def run_folders(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Run folders named by ``paths``: folders holding ``meta.json``, glob
    patterns (``runs/*``, ``runs/**``), or folders whose subfolders are
    runs (a bench's cells).  Raises CircuitError when none is found."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[Path] = []
    for item in items:
        text = str(item)
        if glob.has_magic(text):
            found = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
            out += [p for p in found if (p / META_FILE).is_file()]
            continue
        p = Path(text)
        if (p / META_FILE).is_file():
            out.append(p)
        elif p.is_dir():
            subs = sorted(q.parent for q in p.glob(f"*/{META_FILE}"))
            if not subs:
                raise CircuitError(f"{p}: not a run folder, and no run folder in it")
            out += subs
        else:
            raise CircuitError(f"{p}: no such run folder")
    if not out:
        raise CircuitError(f"no run folder matches {', '.join(map(str, items))}")
    unique: dict[Path, Path] = {}  # a run named twice (a list and a glob) counts once
    for p in out:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def labels_of(folders: list[Path]) -> list[str]:
    """The folders' names, or their paths where two names are the same."""
    names = [p.name for p in folders]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in folders]


class Runs:
    """Several run folders, read as one dataset (``circuit.load_many``)."""

    def __init__(self, folders: list[Path]) -> None:
        self.paths = folders
        self.labels = labels_of(folders)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Run]:
        for p in self.paths:
            yield Run(p)

    def __repr__(self) -> str:
        return f"<circuit.Runs {len(self)} runs: {', '.join(self.labels[:3])}{'...' if len(self) > 3 else ''}>"

    def files(self, table: str) -> list[str]:
        """The Parquet files of ``table`` in every run that has it (for an
        engine of your own: DuckDB, Spark, Dask)."""
        return [
            str(p / f"{table}.parquet") for p in self.paths if (p / f"{table}.parquet").exists()
        ]

    def table(self, name: str) -> pd.DataFrame:
        """Table ``name`` of every run, one DataFrame with a ``run`` column
        (categorical: the run's label) first."""
        if name not in TABLES and name not in ("marks", "stacks"):
            raise CircuitError(f"no table {name!r} (tables: {', '.join(TABLES)})")
        frames = []
        for label, run in zip(self.labels, self, strict=True):
            df = getattr(run, name)
            frames.append(df.assign(run=label))
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        out["run"] = pd.Categorical(out["run"], categories=self.labels)
        return out[["run", *[c for c in out.columns if c != "run"]]]

    def __getattr__(self, name: str) -> pd.DataFrame:
        if name in TABLES or name in ("marks", "stacks"):
            return self.table(name)
        raise AttributeError(name)

    @property
    def meta(self) -> pd.DataFrame:
        """One row per run: its label and meta.json's scalar fields."""
        rows = []
        for label, run in zip(self.labels, self, strict=True):
            scalars = {k: v for k, v in run.meta.items() if not isinstance(v, (dict, list))}
            rows.append({"run": label, **scalars})
        return pd.DataFrame(rows)

    def summaries(self, workers: int | None = None) -> list[dict[str, Any]]:
        """Every run's summary (``circuit summary --json``), in order; in
        ``workers`` processes (default: one per CPU) when there are many."""
        paths = [str(p) for p in self.paths]
        workers = workers or os.cpu_count() or 1
        if workers <= 1 or len(paths) < 8:
            return [_summary(p) for p in paths]
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(_summary, paths, chunksize=max(1, len(paths) // (4 * workers))))

    def summary(self, workers: int | None = None) -> pd.DataFrame:
        """One row per run: its label and the main figures of its summary,
        with the count of findings and the GIL contention."""
        rows = []
        for label, s in zip(self.labels, self.summaries(workers), strict=True):
            row: dict[str, Any] = {"run": label}
            row.update({k: s.get(k) for k in SUMMARY_COLUMNS})
            row["threads"] = len(s.get("threads") or [])
            row["findings"] = len(s.get("findings") or [])
            row["gil_contention"] = (s.get("gil") or {}).get("contention")
            rows.append(row)
        return pd.DataFrame(rows)


def _summary(path: str) -> dict[str, Any]:
    return Run(path).summary()


def load_many(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Runs:
    """Run folders (paths, globs, folders of runs) as one :class:`Runs`."""
    return Runs(run_folders(paths))
