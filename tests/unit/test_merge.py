"""The final merge in bounded memory (tracer/merge.py).

A table of more rows than ``MERGE_ROWS`` is sorted bucket by bucket (ranges
of its leading sort keys); laid end to end the buckets must be exactly the
table sorted at once, and no bucket may hold more than ``MERGE_ROWS`` rows
unless a single key value has more.  The limits are made small here so that
a run of a few thousand rows takes the bucket path.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import circuit
from circuit.tracer import merge
from circuit.tracer.schema import FD_KIND_COLUMNS, SORT_KEYS
from circuit.tracer.writer import RunWriter, prepare_run_dir

META = {"format_version": 1, "mode": "run", "start_ns": 0, "finalized": False}
PIDS = (7, 300, 4000)


def _write_run(path, samples: int, threads: int, seed: int = 3) -> RunWriter:
    """A run of PIDS processes of ``threads`` threads (tids interleaved between
    processes, rows in arrival order), flushed every 10 samples; fd events and
    maps as well.  Not finalised."""
    rng = random.Random(seed)
    w = RunWriter(prepare_run_dir(path, force=False), dict(META))
    for s in range(samples):
        t = 10_000_000 * (s + 1)
        for pid in PIDS:
            nkinds = len(FD_KIND_COLUMNS)
            w.add("processes", (t, pid, 1, threads, s, t, t, 0, 0, 0, 0, 0, 0, 3, *(0,) * nkinds))
            rows = [
                (pid, pid + 10 * k, f"w{k}", rng.choice("RS"), "running", -1, 0, "",
                 rng.randrange(1 << 40), t, t, k, s, rng.randrange(9), 0)
                for k in range(threads)
            ]  # fmt: skip
            rng.shuffle(rows)  # the writer takes them in any order
            w.add_threads(t, rows)
            if rng.random() < 0.3:
                for fd in rng.sample(range(3, 40), 3):
                    w.add("fds", (t, pid, fd, "open", "file", f"/tmp/f{fd}", "", "", "", False))
            if s % 7 == 0:
                w.add("maps", (t, pid, 0x1000 * (s + 1), 0x2000 * (s + 1), "/lib/x.so", "r-xp"))
                w.add("maps", (t, pid, 0x10, 0x20, "/lib/y.so", "r--p"))
        if s % 10 == 9:
            w.flush()
    return w


def _parts(path) -> dict[str, pd.DataFrame]:
    """Every table as the parts hold it (the run is not finalised yet)."""
    run = circuit.load(path)
    return {name: getattr(run, name) for name in ("threads", "processes", "fds", "maps")}


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype({c: str for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)})


@pytest.fixture
def small_limits(monkeypatch):
    # Per table (its sort keys): (rows sorted at once, distinct leading keys among them).
    sizes: dict[tuple[str, ...], list[tuple[int, int]]] = {}
    original = merge._write_sorted

    def spy(pa_, out, tables, schema, keys):
        t = pa.concat_tables(tables) if tables else None
        if t is not None and t.num_rows:
            lead = t.select(list(merge.bucket_keys(keys))).to_pandas().drop_duplicates()
            sizes.setdefault(keys, []).append((t.num_rows, len(lead)))
        return original(pa_, out, tables, schema, keys)

    monkeypatch.setattr(merge, "MERGE_ROWS", 500)
    monkeypatch.setattr(merge, "ROW_GROUP_ROWS", 200)
    monkeypatch.setattr(merge, "SPLIT_ROWS", 64)
    monkeypatch.setattr(merge, "_write_sorted", spy)
    return sizes


def test_a_table_merged_in_buckets_is_the_table_sorted_at_once(tmp_path, small_limits):
    path = tmp_path / "run"
    w = _write_run(path, samples=120, threads=6)
    before = _parts(path)
    assert len(before["threads"]) == 120 * 6 * len(PIDS) > 4 * merge.MERGE_ROWS
    w.finalize({})
    after = _parts(path)
    for name, df in before.items():
        keys = list(SORT_KEYS[name])
        want = _plain(df).sort_values(keys, kind="stable").reset_index(drop=True)
        got = _plain(after[name])
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    # The threads table went through buckets: several, none above the limit.
    f = pq.ParquetFile(path / "threads.parquet")
    assert f.metadata.num_rows == len(before["threads"])
    assert all(f.metadata.row_group(i).num_rows <= 200 for i in range(f.metadata.num_row_groups))
    # 2160 thread rows, 120 per thread: buckets of 4 threads (480 rows), in key order.
    buckets = small_limits[SORT_KEYS["threads"]]
    assert [n for n, _ in buckets] == [480, 480, 480, 480, 240]
    assert small_limits[SORT_KEYS["processes"]] == [(360, 3)]  # fits: sorted at once
    leftovers = [
        p.name for p in path.iterdir() if p.name.startswith(".") or p.name.endswith(".parts")
    ]
    assert leftovers == []


def test_one_key_value_with_more_rows_than_the_limit_is_its_own_bucket(tmp_path, small_limits):
    """One thread sampled more often than the limit: its bucket holds it alone."""
    path = tmp_path / "run"
    w = _write_run(path, samples=600, threads=1)  # 600 rows per thread, limit 500
    before = _parts(path)["threads"]
    w.finalize({})
    after = _parts(path)["threads"]
    want = _plain(before).sort_values(["pid", "tid", "t_ns"], kind="stable")
    pd.testing.assert_frame_equal(_plain(after), want.reset_index(drop=True), check_dtype=False)
    assert small_limits[SORT_KEYS["threads"]] == [(600, 1)] * len(PIDS)


def test_a_merge_killed_midway_leaves_a_run_that_loads(tmp_path, small_limits, monkeypatch):
    """The parts are removed only once the table is down; the spill folder of
    a killed merge is hidden and ignored, and removed by the next merge."""
    path = tmp_path / "run"
    w = _write_run(path, samples=60, threads=6)
    before = _parts(path)

    def killed(*args):
        raise KeyboardInterrupt  # stands for the kill, in the middle of the buckets

    monkeypatch.setattr(merge, "_write_sorted", killed)
    with pytest.raises(KeyboardInterrupt):
        w.finalize({})
    monkeypatch.undo()
    (path / ".threads.merge").mkdir()  # as a SIGKILL would leave it
    (path / ".threads.merge" / "000000.arrows").write_bytes(b"junk")
    run = circuit.load(path)
    assert not run.meta["finalized"]
    pd.testing.assert_frame_equal(_plain(run.threads), _plain(before["threads"]))
    monkeypatch.setattr(merge, "MERGE_ROWS", 500)
    w.finalize({})
    assert not (path / ".threads.merge").exists()
    assert len(circuit.load(path).threads) == len(before["threads"])


BUCKETS_IN_A_FRESH_PROCESS = r"""
import json, sys
from pathlib import Path
from circuit.tracer import merge
from circuit.tracer.writer import RunWriter, prepare_run_dir
merge.MERGE_ROWS, merge.SPLIT_ROWS = 500, 64
w = RunWriter(prepare_run_dir(Path(sys.argv[1]), force=False), {"format_version": 1})
for s in range(300):
    w.add_threads(s, [(7, 7 + k, "x", "S", "sleep", 1, 0, "", 1, 1, 1, 1, 1, 1, 0) for k in range(5)])
    if s % 10 == 9:
        w.flush()
w.finalize({})
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "pandas" or m == "pyarrow.dataset")
print(json.dumps(heavy))
"""


def test_the_bucket_path_keeps_pandas_out_of_the_sampler(tmp_path):
    # numpy views of the key columns, not to_numpy(), which imports pandas.
    p = subprocess.run(
        [sys.executable, "-c", BUCKETS_IN_A_FRESH_PROCESS, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == []
    f = pq.ParquetFile(tmp_path / "run" / "threads.parquet")
    assert f.metadata.num_rows == 1500
