"""The batched summary (analysis/query.py) against the in-memory one, on
every run folder a test session left in its temporary directory.

tests/conftest.py calls :func:`check_runs` at the end of the session: a
mismatch fails the session.  Small batches, so that runs of a few threads
are read in several, and the processes table reduced as a long run's is.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

BATCH_ROWS = 64
# The session's runs are compared, in a random order (so that sessions
# together cover them all), until this much time is spent: a full session
# leaves a few hundred, most of them small.  CIRCUIT_STREAM_CHECK_S=0 checks
# every one.
BUDGET_S = float(os.environ.get("CIRCUIT_STREAM_CHECK_S", "20"))


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two summaries differ (floats: within 1e-9 relative, 1e-6 absolute)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in one" for k in set(a) ^ set(b)]
        for k in set(a) & set(b):
            out += diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff(x, y, f"{path}[{i}]")
        ]
    if (isinstance(a, float) and isinstance(b, (int, float))) or (
        isinstance(b, float) and isinstance(a, int)
    ):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def compare(folder: Path, batch_rows: int = BATCH_ROWS) -> list[str]:
    """Differences between the two paths' summaries of one run folder
    ([] when equal, or when the folder is not a readable run)."""
    from circuit.analysis.query import streamable, summarize_streamed
    from circuit.analysis.run import Run
    from circuit.analysis.summary import summarize

    try:
        ref = summarize(Run(folder))
    except Exception:
        return []  # corrupt on purpose (the reliability tests): the reader's job
    new_run = Run(folder)
    if not streamable(new_run):
        return []
    from circuit.analysis import process_rows

    reduce_rows = process_rows.REDUCE_ROWS
    process_rows.REDUCE_ROWS = 0  # the processes table reduced, however short
    try:
        new = summarize_streamed(new_run, batch_rows=batch_rows)
    except Exception as e:
        return [f"the batched summary failed: {type(e).__name__}: {e}"]
    finally:
        process_rows.REDUCE_ROWS = reduce_rows
    norm = lambda s: json.loads(json.dumps(s, default=str))  # noqa: E731
    return diff(norm(ref), norm(new))


def check_runs(base: Path, budget_s: float = BUDGET_S) -> tuple[int, int, dict[str, list[str]]]:
    """(runs compared, runs found, {folder: differences}) for the run
    folders under ``base``; ``budget_s`` 0: no limit."""
    bad: dict[str, list[str]] = {}
    n = 0
    start = time.monotonic()
    metas = sorted(base.rglob("meta.json"))
    random.shuffle(metas)
    for meta in metas:
        if budget_s and time.monotonic() - start > budget_s:
            break
        d = compare(meta.parent)
        n += 1
        if d:
            bad[str(meta.parent)] = d[:5]
    return n, len(metas), bad
