"""Behaviour that matters for overhead (not time budgets).

The sampling process must stay light: pandas/matplotlib cost ~0.3 s of CPU
and tens of MB to import, and an import in the middle of a run steals that
from the target.  pyarrow pulls pandas in behind our back (``pa.array`` and
``pq.read_table`` both do), so this is checked on a real ``circuit run``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest

from circuit.tracer.writer import _column

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
