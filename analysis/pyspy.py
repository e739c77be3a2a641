"""py-spy dumps as a DataFrame, joined to the kernel samples by OS thread id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from circuit.tracer.schema import PYSPY_DIR

STACK_COLUMNS = {
    "t_ns": "int64",
    "end_ns": "int64",
    "pid": "int64",
    "tid": "int64",
    "thread_name": "object",
    "owns_gil": "bool",
    "active": "bool",
    "trigger": "object",
    "stack": "object",
    "frames": "object",
}


def format_stack(frames: list[dict]) -> str:
    """``func (file:line)`` per frame, innermost first, joined by `` <- ``."""
    # (the file's last path component: what Path(...).name gives, without a
    # Path per frame; a dump holds hundreds of frames)
    return " <- ".join(
        f"{f.get('name')} ({str(f.get('file') or '?').rstrip('/').rpartition('/')[2]}:"
        f"{f.get('line')})"
        for f in frames
    )


def stacks_from_records(records: list[dict]) -> pd.DataFrame:
    """One row per thread per dump (pure: the parsed lines of dumps.jsonl)."""
    rows = []
    for r in records:
        for t in r.get("threads") or []:
            frames = t.get("frames") or []
            rows.append(
                (
                    int(r["t_ns"]),
                    int(r.get("end_ns", r["t_ns"])),
                    int(r["pid"]),
                    int(t["tid"]) if t.get("tid") is not None else -1,
                    t.get("name") or "",
                    bool(t.get("owns_gil")),
                    bool(t.get("active")),
                    r.get("trigger", ""),
                    format_stack(frames),
                    frames,
                )
            )
    df = pd.DataFrame(rows, columns=list(STACK_COLUMNS))
    return df.astype(STACK_COLUMNS) if len(df) else _empty()


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in STACK_COLUMNS.items()})


def load_stacks(run_dir: Path, warnings: list[str] | None = None) -> pd.DataFrame:
    f = Path(run_dir) / PYSPY_DIR / "dumps.jsonl"
    if not f.exists():
        return _empty()
    records = []
    for line in f.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if warnings is not None:
                warnings.append("skipped a truncated line of pyspy/dumps.jsonl")
    return stacks_from_records(records)


def join_stacks(threads: pd.DataFrame, stacks: pd.DataFrame) -> pd.DataFrame:
    """Give each thread sample the latest dump of its thread at or before it.

    Adds ``py_name`` (Python thread name), ``stack`` (innermost first),
    ``owns_gil`` and ``stack_t_ns`` (when that dump started); empty / NaN for
    samples before the thread's first dump and for non-Python threads.
    Samples before a thread's first dump take that first dump's name (thread
    names rarely change) but no stack.
    """
    out = threads.copy()
    out["_order"] = np.arange(len(out))
    cols = ["py_name", "stack", "owns_gil", "stack_t_ns"]
    if stacks.empty or out.empty:
        for c in cols:
            out[c] = pd.Series([None] * len(out), dtype=object, index=out.index)
        return out.drop(columns="_order")
    s = stacks[["t_ns", "pid", "tid", "thread_name", "stack", "owns_gil"]].rename(
        columns={"t_ns": "stack_t_ns", "thread_name": "py_name"}
    )
    s = s.sort_values("stack_t_ns")
    left = out.sort_values("t_ns")
    left["_t"] = left["t_ns"].astype("int64")
    for c in ("pid", "tid"):
        left[c] = left[c].astype("int64")
        s[c] = s[c].astype("int64")
    s["_t"] = s["stack_t_ns"].astype("int64")
    j = pd.merge_asof(left, s.drop(columns=[]), on="_t", by=["pid", "tid"], direction="backward")
    first = s.drop_duplicates(["pid", "tid"]).set_index(["pid", "tid"])["py_name"]
    missing = j["py_name"].isna()
    if missing.any():
        idx = pd.MultiIndex.from_frame(j.loc[missing, ["pid", "tid"]])
        j.loc[missing, "py_name"] = first.reindex(idx).to_numpy()
    return j.sort_values("_order").drop(columns=["_order", "_t"]).reset_index(drop=True)


def thread_names(stacks: pd.DataFrame) -> dict[tuple[int, int], str]:
    """(pid, tid) -> the Python thread name in the last dump that named it.

    (A dump taken as the interpreter shuts down can see a thread whose name
    is gone already: an earlier name stands.)"""
    if stacks.empty:
        return {}
    named = stacks[stacks["thread_name"].fillna("").astype(str) != ""]
    last = named.sort_values("t_ns").drop_duplicates(["pid", "tid"], keep="last")
    return {
        (int(p), int(t)): str(n)
        for p, t, n in zip(last["pid"], last["tid"], last["thread_name"], strict=True)
    }
