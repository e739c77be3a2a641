"""The reduced processes table (analysis/process_rows.py) gives every
reader of it the answer the whole table gives."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from circuit.analysis import process_rows
from circuit.analysis.exits import children_cpu
from circuit.analysis.findings.fds import _counts
from circuit.analysis.summary import process_figures
from circuit.tracer.schema import FD_KIND_COLUMNS, arrow_schema


def _table(rows_per_pid: dict[int, int], seed: int = 3) -> pa.Table:
    """Random processes rows, sorted by (pid, t_ns) as a finalized run stores them."""
    rng = random.Random(seed)
    schema = arrow_schema("processes")
    data: dict[str, list[int]] = {f.name: [] for f in schema}
    for pid, n in sorted(rows_per_pid.items()):
        t, cpu, kids = 1_000 + pid, 0, 0
        for _ in range(n):
            t += rng.randint(900_000, 1_100_000)
            cpu += rng.randint(0, 10_000)
            kids += rng.choice((0, 0, 5_000))
            row = {f.name: rng.randint(0, 50) for f in schema}
            row.update(t_ns=t, pid=pid, ppid=pid - 1, user_ns=cpu, system_ns=cpu // 3)
            row.update(children_user_ns=kids, children_system_ns=kids // 2)
            row.update(rss_bytes=rng.randint(1, 1 << 30))
            for name, v in row.items():
                data[name].append(v)
    return pa.table(data, schema=schema)


@pytest.mark.parametrize("rows", [{7: 1}, {7: 2}, {7: 3, 9: 1}, {5: 40, 6: 2, 8: 977}])
@pytest.mark.parametrize("attached", [False, True])
def test_the_reduced_table_answers_as_the_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: dict[int, int], attached: bool
) -> None:
    monkeypatch.setattr(process_rows, "BATCH_ROWS", 16)  # processes split across batches
    t = _table(rows)
    pq.write_table(t, tmp_path / "processes.parquet", row_group_size=100)
    whole = t.to_pandas()
    small = process_rows.reduced_processes(tmp_path)
    assert len(small) <= 3 * len(rows)
    assert list(small.columns) == list(whole.columns)
    assert (small.dtypes == whole.dtypes).all()
    first_t = int(whole["t_ns"].min()) + 500_000  # some processes start after it
    procs = whole.iloc[:0][["pid"]]
    for cpu in ({}, {p: 1e12 for p in rows}):  # threads' CPU above the counters: rescaled
        assert process_figures(small, procs, cpu, first_t, attached) == process_figures(
            whole, procs, cpu, first_t, attached
        )
    assert children_cpu(small, whole.iloc[:0], None) == children_cpu(whole, whole.iloc[:0], None)
    for pid in rows:
        for kind in (c[4:] for c in FD_KIND_COLUMNS):
            assert _counts(small, pid, kind) == _counts(whole, pid, kind)
    ends = small.groupby("pid")["t_ns"].max().to_dict()
    assert ends == whole.groupby("pid")["t_ns"].max().to_dict()


def test_a_run_without_its_sample_count_reads_the_whole_table() -> None:
    assert process_rows.reducible({"samples": 10, "rate_hz_achieved": 99.0})
    assert not process_rows.reducible({"samples": 10})
    assert not process_rows.reducible({"rate_hz_achieved": 99.0})
