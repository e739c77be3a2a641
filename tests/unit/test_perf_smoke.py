"""Behaviour that matters for overhead (not time budgets).

The sampling process must stay light: pandas/matplotlib cost ~0.3 s of CPU
and tens of MB to import, and an import in the middle of a run steals that
from the target.  pyarrow pulls pandas in behind our back (``pa.array`` and
``pq.read_table`` both do), so this is checked on a real ``circuit run``.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pyarrow as pa
import pytest

from circuit.tracer.parts import part_schema
from circuit.tracer.schema import TABLES, arrow_schema
from circuit.tracer.writer import _column, _dictionary, _expand, _thread_arrays

SCRIPT = r"""
import json, sys
from circuit.cli import main
rc = main(["run", "-q", "--force", "-o", sys.argv[1], "--",
           sys.executable, "-c", "import time; time.sleep(1.3)"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"pandas", "matplotlib"} or m == "pyarrow.dataset")
print(json.dumps({"rc": rc, "heavy": heavy}))
"""


@pytest.mark.integration
def test_sampler_process_never_imports_the_analysis_stack(tmp_path):
    # 1.3 s: long enough for a mid-run flush (every 1 s) and the final compaction.
    out = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["rc"] == 0
    assert res["heavy"] == []
    meta = json.loads((out / "meta.json").read_text())
    assert meta["finalized"] is True
    # The flushes really happened (the check above is not vacuous).
    assert meta["samples"] >= 50
    assert (out / "threads.parquet").exists()


EMPTY_TABLES = r"""
import json, sys
from pathlib import Path
from circuit.tracer.writer import RunWriter, prepare_run_dir
w = RunWriter(prepare_run_dir(Path(sys.argv[1]), force=False), {"format_version": 1})
w.add("fds", (1, 7, 3, "open", "file", "/x", "", "", "", True))
w.flush()
w.finalize({})
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "pandas" or m == "pyarrow.dataset")
print(json.dumps(heavy))
"""


def test_finalising_tables_without_rows_keeps_pandas_out(tmp_path):
    # threads, processes, procs, maps and gil have no row at all here (a short
    # run, a backend without maps): their merged files are still written.
    p = subprocess.run(
        [sys.executable, "-c", EMPTY_TABLES, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == []
    assert len(list((tmp_path / "run").glob("*.parquet"))) == len(TABLES)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        ([0, -1, 2**62, -(2**63)], pa.int64()),
        ([0, -1, 2**31 - 1], pa.int32()),
        ([-1, 0, 450, 32767], pa.int16()),
        ([0, 2**64 - 1, 2**40], pa.uint64()),
        (["a", "b", "a", "", "é) S 1 (", "a"], pa.string()),
        ([True, False] * 9 + [True], pa.bool_()),
        ([], pa.string()),
        ([], pa.int64()),
        ([1, None, 3], pa.int64()),  # falls back to pyarrow
    ],
)
def test_writer_columns_match_pyarrow(values, dtype):
    got = _column(pa, tuple(values), dtype)
    assert got.type == dtype
    assert got.equals(pa.array(values, type=dtype))


def _plain_threads_table(ts, rows):
    schema = arrow_schema("threads")
    cols = [ts, *zip(*rows, strict=True)]
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, schema, strict=True)], schema=schema
    )


def _thread_batches(reuse: str, odd: str = "") -> list[tuple[int, list[tuple]]]:
    """Two processes' thread rows over 60 samples, as the sampler hands them over.

    reuse: "none" (every row a new object), "tuples" (a thread that did not
    run is the same tuple as before, the list is new) or "lists" (also the
    same list object when none of the process's threads ran).  odd: "int" or
    "str" puts a None in one thread's row (system_ns, wchan), for pyarrow.
    """
    rng = random.Random(7)
    base = {
        pid: [
            (pid, pid + i, f"t{i % 3}", "S", "lock", 202, -(2**40), "futex_wait_queue",
             i, 2 * i, 3 * i, 4, i, 0, i % 2)
            for i in range(nthreads)
        ]
        for pid, nthreads in ((10, 100), (20, 7))  # 100: lists compared by position
    }  # fmt: skip
    at = {"int": 9, "str": 7}.get(odd)
    if at is not None:
        base[20][0] = (*base[20][0][:at], None, *base[20][0][at + 1 :])  # never runs
    batches = []
    for k in range(60):
        for pid, rows in base.items():
            if k % 4 == 0 or (pid == 10 and k % 5 == 0):  # a thread ran: a new list
                rows = list(rows)
                for j in rng.sample(range(1, len(rows)), 2):
                    r = rows[j]
                    rows[j] = (*r[:2], "é) S 1 (", "R", "running", -1, 0, "", r[8] + k, *r[9:])
                if k == 28:  # a thread starts...
                    rows.insert(
                        2, (pid, 999, "new", "R", "running", -1, 0, "", 0, 0, 0, 0, 0, 0, 1)
                    )
                if k == 48:  # ...and one ends
                    del rows[4]
                base[pid] = rows
            if reuse != "lists":
                rows = list(rows)  # a new list each sample
            if reuse == "none":
                rows = [tuple(list(r)) for r in rows]  # all distinct objects
            batches.append((1_000 + k, rows))
    return batches


THREADS_PART = part_schema(pa, "threads", arrow_schema("threads"))


@pytest.mark.parametrize("odd", ["", "int", "str"])
def test_thread_flush_expands_reused_rows_and_lists_exactly(odd):
    from circuit.tracer import writer

    # Idle threads hand the writer the same tuple object every sample, idle
    # processes the same list: the flush builds columns once per distinct row
    # and expands them.  Every way gives the same bytes, and the same values
    # as plain pyarrow.
    got = {}
    for reuse in ("none", "tuples", "lists"):
        batches = _thread_batches(reuse, odd)
        if reuse == "lists":
            assert len({id(b) for _, b in batches}) < len(batches) / 2  # the case is real
            assert max(len(b) for _, b in batches) >= writer._POSITIONAL
        arrays = _thread_arrays(pa, batches, THREADS_PART)
        got[reuse] = pa.RecordBatch.from_arrays(arrays, schema=THREADS_PART)
        ts = [t for t, b in batches for _ in b]
        rows = [r for _, b in batches for r in b]
        table = pa.Table.from_batches([got[reuse]]).cast(arrow_schema("threads"))
        assert table.equals(_plain_threads_table(ts, rows))
        for name in ("name", "state", "wait", "wchan"):
            words = got[reuse].column(name).dictionary.to_pylist()
            assert len(set(words)) == len(words)  # each value once
    assert got["tuples"].serialize() == got["none"].serialize()
    assert got["lists"].serialize() == got["none"].serialize()
    nulls = got["lists"].column({"int": "system_ns", "str": "wchan"}.get(odd, "cpu")).null_count
    assert nulls == (60 if odd else 0)


def test_thread_flush_of_no_rows():
    assert _thread_arrays(pa, [], THREADS_PART) is None
    assert _thread_arrays(pa, [(1, []), (2, [])], THREADS_PART) is None


@pytest.mark.parametrize("dtype", [pa.int16(), pa.int32(), pa.int64()])
def test_expand_takes_exactly(dtype):
    import numpy as np

    values = [0, -1, 7, 2**15 - 1, -(2**15), 1, 2]
    rng = random.Random(3)
    idx = [rng.randrange(len(values)) for _ in range(2000)]
    small = _column(pa, values, dtype)
    got = _expand(pa, np, small, np.array(idx, dtype=np.int64), len(idx))
    want = pa.array([values[i] for i in idx], type=dtype)
    assert got.equals(want)
    assert got.buffers()[1].to_pybytes() == want.buffers()[1].to_pybytes()


@pytest.mark.parametrize("take", [False, True])
def test_dictionary_encodes_exactly(take):
    import numpy as np

    values = ["", "a", "\x00", "a\x00", "é) S 1 (", "futex_wait_queue", "x" * 300, "a"]
    rng = random.Random(3)
    idx = np.array([rng.randrange(len(values)) for _ in range(2000)], dtype=np.int64)
    want = [values[i] for i in idx] if take else values
    dtype = pa.dictionary(pa.int32(), pa.string())
    got = _dictionary(pa, np, values, dtype, idx if take else None)
    assert got.type == dtype
    assert got.to_pylist() == want
    assert got.dictionary.to_pylist() == list(dict.fromkeys(values))
    assert _dictionary(pa, np, ["a", None], dtype) is None  # odd: the caller falls back
