"""The last few seconds of a run being written, as the run's own DataFrames.

A live view (``circuit top``) is handed the record batches the run folder
gets, as they are written (tracer/live.py): :class:`LiveWindow` keeps those
of the last window and turns them into the frames a loaded run has (the same
columns, dtypes and categories as analysis/run.py reads), so the window's
figures come from the functions every run's figures come from
(analysis/live.py).  The py-spy dumps are read from the run folder as they
are appended.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from circuit.tracer.schema import PYSPY_DIR, arrow_schema

from .pyspy import stacks_from_records

WINDOWED = ("threads", "processes", "gil")  # kept for the last window only
KEPT = ("procs", "maps")  # kept whole: a process's command line and image, from its start
_CATEGORIES = {"threads": ["name", "state", "wait", "wchan"]}
# Stacks kept for names and stacks: the newest this many (thread, dump) rows.
MAX_STACK_ROWS = 5000


class Frames(NamedTuple):
    """One window of a run: its tables as DataFrames, and its bounds."""

    threads: pd.DataFrame
    processes: pd.DataFrame
    gil: pd.DataFrame
    procs: pd.DataFrame
    maps: pd.DataFrame
    stacks: pd.DataFrame
    start_ns: int  # the window's first process sample
    end_ns: int  # its last


class LiveWindow:
    """The record batches of the last ``window_s`` seconds (the newest
    process sample's time is now), and the dumps in ``run_dir``."""

    def __init__(self, window_s: float, run_dir: Path | None = None) -> None:
        self.window_ns = round(window_s * 1e9)
        self.run_dir = run_dir
        self.batches: dict[str, list[tuple[int, Any]]] = {n: [] for n in (*WINDOWED, *KEPT)}
        self.newest_ns = 0
        self.changed = False  # new rows since the last frames()
        self._dump_pos = 0
        self._stacks = stacks_from_records([])
        self._kept: dict[str, tuple[int, pd.DataFrame]] = {}  # KEPT table -> (batches, frame)

    def add(self, table: str, batch: Any) -> None:
        """One record batch of ``table``, as the run folder got it."""
        if table not in self.batches or batch.num_rows == 0:
            return
        newest = int(batch.column(0).to_numpy().max())  # every table starts with t_ns
        self.batches[table].append((newest, batch))
        if table == "processes":
            self.newest_ns = max(self.newest_ns, newest)
        self.changed = True

    def frames(self) -> Frames | None:
        """The window's frames; None before the first process sample."""
        self.changed = False
        if not self.batches["processes"]:
            return None
        end = self.newest_ns
        start_bound = end - self.window_ns
        for name in WINDOWED:
            self.batches[name] = [(t, b) for t, b in self.batches[name] if t >= start_bound]
        tables = {n: self._frame(n) for n in WINDOWED}
        for name in KEPT:  # converted again only when they grew
            n = len(self.batches[name])
            if self._kept.get(name, (-1,))[0] != n:
                self._kept[name] = (n, self._frame(name))
            tables[name] = self._kept[name][1]
        for name in WINDOWED:
            df = tables[name]
            if len(df):
                df = df[df["t_ns"].to_numpy() >= start_bound].reset_index(drop=True)
            tables[name] = df
        procs = tables["processes"]
        start = int(procs["t_ns"].min()) if len(procs) else end
        return Frames(
            tables["threads"],
            procs,
            tables["gil"],
            tables["procs"],
            tables["maps"],
            self.stacks(),
            start,
            end,
        )

    def _frame(self, name: str) -> pd.DataFrame:
        import pyarrow as pa

        batches = [b for _, b in self.batches[name]]
        cats = _CATEGORIES.get(name, [])
        if not batches:
            df = arrow_schema(name).empty_table().to_pandas()
            for c in cats:
                df[c] = df[c].astype("category")
            return df
        table = pa.Table.from_batches(batches)
        if cats:
            # Each batch has its own dictionaries: one categorical per
            # column, with sorted categories, as a loaded run has it.
            table = table.unify_dictionaries()
        df = table.to_pandas(use_threads=False)  # small tables: the pool costs more than it saves
        for c in cats:
            col = df[c]
            if not isinstance(col.dtype, pd.CategoricalDtype):
                col = col.astype("category")
            df[c] = col.cat.set_categories(sorted(col.cat.categories))
        return df

    def stacks(self) -> pd.DataFrame:
        """The newest dumps of ``run_dir/pyspy/dumps.jsonl``, read on from
        where the last call stopped (whole lines only)."""
        if self.run_dir is None:
            return stacks_from_records([])
        f = Path(self.run_dir) / PYSPY_DIR / "dumps.jsonl"
        try:
            size = os.path.getsize(f)
        except OSError:
            size = 0
        if size > self._dump_pos:
            with open(f, "rb") as fh:
                fh.seek(self._dump_pos)
                data = fh.read(size - self._dump_pos)
            whole = data.rfind(b"\n") + 1
            self._dump_pos += whole
            records = []
            for line in data[:whole].splitlines():
                try:
                    records.append(json.loads(line))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
            if records:  # only the new dumps are made rows
                new = stacks_from_records(records)
                both = (
                    pd.concat([self._stacks, new], ignore_index=True) if len(self._stacks) else new
                )
                self._stacks = both.iloc[-MAX_STACK_ROWS:].reset_index(drop=True)
        return self._stacks
