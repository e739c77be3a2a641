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

from circuit.tracer.schema import arrow_schema
from circuit.tracer.writer import _column, _expand, _thread_arrays

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


def _thread_batches(reuse: str, odd: bool = False) -> list[tuple[int, list[tuple]]]:
    """Two processes' thread rows over 60 samples, as the sampler hands them over.

    reuse: "none" (every row a new object), "tuples" (a thread that did not
    run is the same tuple as before, the list is new) or "lists" (also the
    same list object when none of the process's threads ran).
    """
    rng = random.Random(7)
    base = {
        pid: [
            (pid, pid + i, f"t{i % 3}", "S", "lock", 202, -(2**40), "futex_wait_queue",
             i, 2 * i, 3 * i, 4, i, 0, i % 2)
            for i in range(nthreads)
        ]
        for pid, nthreads in ((10, 50), (20, 7))
    }  # fmt: skip
    if odd:
        base[20][3] = (*base[20][3][:9], None, *base[20][3][10:])  # system_ns: pyarrow's
    batches = []
    for k in range(60):
        for pid, rows in base.items():
            if k % 4 == 0 or (pid == 10 and k % 5 == 0):  # a thread ran: a new list
                rows = list(rows)
                for j in rng.sample(range(len(rows)), 2):
                    r = rows[j]
                    rows[j] = (*r[:2], "é) S 1 (", "R", "running", -1, 0, "", r[8] + k, *r[9:])
                base[pid] = rows
            if reuse != "lists":
                rows = list(rows)  # a new list each sample
            if reuse == "none":
                rows = [tuple(list(r)) for r in rows]  # all distinct objects
            batches.append((1_000 + k, rows))
    return batches


@pytest.mark.parametrize("odd", [False, True])
def test_thread_flush_expands_reused_rows_and_lists_exactly(odd, monkeypatch):
    # Idle threads hand the writer the same tuple object every sample, idle
    # processes the same list: the flush builds columns once per distinct row
    # and expands them.  Every way gives the same bytes as plain pyarrow.
    from circuit.tracer import writer

    blocks = []
    real = writer._expand_blocks
    monkeypatch.setattr(writer, "_expand_blocks", lambda *a: blocks.append(1) or real(*a))
    schema = arrow_schema("threads")
    got = {}
    for reuse in ("none", "tuples", "lists"):
        batches = _thread_batches(reuse, odd)
        if reuse == "lists":
            assert len({id(b) for _, b in batches}) < len(batches) / 2  # the case is real
        arrays = _thread_arrays(pa, batches, schema)
        got[reuse] = pa.RecordBatch.from_arrays(arrays, schema=schema)
        ts = [t for t, b in batches for _ in b]
        rows = [r for _, b in batches for r in b]
        assert pa.Table.from_batches([got[reuse]]).equals(_plain_threads_table(ts, rows))
    assert got["tuples"].serialize() == got["none"].serialize()
    assert got["lists"].serialize() == got["none"].serialize()
    assert len(blocks) == 4  # "lists": the string columns (before the odd one) copied by list
    assert got["lists"].column(10).null_count == (len(_thread_batches("none")) // 2 if odd else 0)


def test_thread_flush_of_no_rows():
    schema = arrow_schema("threads")
    assert _thread_arrays(pa, [], schema) is None
    assert _thread_arrays(pa, [(1, []), (2, [])], schema) is None


@pytest.mark.parametrize("dtype", [pa.string(), pa.int16(), pa.int32(), pa.int64()])
def test_expand_takes_exactly(dtype):
    import numpy as np

    if dtype == pa.string():
        values = ["", "a", "\x00", "a\x00", "é) S 1 (", "futex_wait_queue", "x" * 300]
    else:
        values = [0, -1, 7, 2**15 - 1, -(2**15), 1, 2]
    rng = random.Random(3)
    idx = [rng.randrange(len(values)) for _ in range(2000)]
    small = _column(pa, values, dtype)
    got = _expand(pa, np, small, np.array(idx, dtype=np.int64), len(idx))
    want = pa.array([values[i] for i in idx], type=dtype)
    assert got.equals(want)
    assert [b.to_pybytes() for b in got.buffers()[1:]] == [
        b.to_pybytes() for b in want.buffers()[1:]
    ]
