"""The processes table of a long run, read in batches and reduced to the
rows the summary reads: per process its first row, its last row, and
between them one row of its peaks.

A process is sampled at every tick (1.44M rows for 4 processes at 100 Hz
for an hour, 14.4M at 1 kHz), but the summary only reads, per process,
the counters of its first and last rows (``summary._baseline``,
``exits.children_cpu``), its parent at the end, the peaks of RSS, threads
and fds (``summary.process_figures``), the first, last and peak count of
each fd kind and its last sample time (findings/fds.py).  The reduced
frame gives each of those the same answer as the whole table: the peaks'
row carries the first row's time and counters, so first and last stay
first and last, and the maxima of the peak columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from circuit.tracer.schema import FD_KIND_COLUMNS

PEAKS = ["rss_bytes", "num_threads", "fds", *FD_KIND_COLUMNS]
BATCH_ROWS = 1_000_000
# Below this many rows the table is read whole (the reduction's pandas
# calls cost more than the rows).
REDUCE_ROWS = 100_000


def reducible(meta: dict[str, Any]) -> bool:
    """The summary takes its sample count and rate from meta (a finalized
    run), not from the processes table's sample times."""
    return meta.get("samples") is not None and meta.get("rate_hz_achieved") is not None


def reduced_processes(path: Path) -> pd.DataFrame:
    """processes.parquet reduced as the module says, in file order per process."""
    import pyarrow.parquet as pq

    from circuit.tracer.schema import arrow_schema

    f = pq.ParquetFile(path / "processes.parquet", pre_buffer=False)
    cols = list(arrow_schema("processes").names)
    first: pd.DataFrame | None = None
    last: pd.DataFrame | None = None
    peaks: pd.DataFrame | None = None
    count = pd.Series(dtype="int64")
    for rb in f.iter_batches(batch_size=BATCH_ROWS, columns=cols):
        df = rb.to_pandas()
        b_first = df.drop_duplicates("pid", keep="first").set_index("pid")
        b_last = df.drop_duplicates("pid", keep="last").set_index("pid")
        b_peaks = df.groupby("pid")[PEAKS].max()
        count = count.add(df.groupby("pid").size(), fill_value=0)
        if first is None or last is None or peaks is None:
            first, last, peaks = b_first, b_last, b_peaks
            continue
        first = pd.concat([first, b_first[~b_first.index.isin(first.index)]])
        last = pd.concat([last[~last.index.isin(b_last.index)], b_last])
        peaks = pd.concat([peaks, b_peaks]).groupby(level=0).max()
    if first is None or last is None or peaks is None:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _dtypes().items()})
    rows = []
    for pid in first.index:  # (in the order processes first appear)
        a, b = first.loc[[pid]], last.loc[[pid]]
        rows.append(a)
        if count[pid] >= 3:
            # between the two: a row of the peaks, at the first row's time
            # (+1 ns: a sort by time keeps it after the first)
            p = a.copy()
            p[PEAKS] = peaks.loc[[pid], PEAKS].to_numpy()
            p["t_ns"] = p["t_ns"] + 1
            rows.append(p)
        if count[pid] >= 2:
            rows.append(b)
    out = pd.concat(rows).reset_index()
    return out[cols].astype(_dtypes())


def _dtypes() -> dict[str, Any]:
    from circuit.tracer.schema import arrow_schema

    return {f.name: f.type.to_pandas_dtype() for f in arrow_schema("processes")}
