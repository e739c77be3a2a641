"""Thread names as the program knows them, for every renderer.

The kernel's name for a Python thread (its ``comm``) is usually the
interpreter's, ``python3``, for every thread alike; the name the program
gave it (``threading.Thread(name="worker-0")``) is in the py-spy dumps
(analysis/pyspy.py).  Timeline lanes, Perfetto tracks, the CSV export and
the summary name a thread by its Python name where a dump named it, and by
its kernel name otherwise, always with its tid: two threads may share a name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .pyspy import thread_names

ThreadKey = tuple[int, int]


def python_names(run: Any) -> dict[ThreadKey, str]:
    """(pid, tid) -> the thread's Python name, from the run's py-spy dumps
    (empty for a run without dumps, or for anything without ``stacks``)."""
    stacks = getattr(run, "stacks", None)
    if stacks is None or len(stacks) == 0:
        return {}
    return thread_names(stacks)


def display_name(comm: Any, python_name: str | None) -> str:
    """The Python name where there is one, else the kernel's."""
    return python_name if python_name else str(comm)


def thread_label(
    pid: int, tid: int, comm: Any, python_name: str | None = None, multi_pid: bool = False
) -> str:
    """``worker-0 (tid 24371)``; prefixed ``24369/`` when several processes share a view."""
    base = f"{display_name(comm, python_name)} (tid {int(tid)})"
    return f"{int(pid)}/{base}" if multi_pid else base


def with_python_names(df: pd.DataFrame, names: dict[ThreadKey, str]) -> pd.DataFrame:
    """``df`` (with ``pid``, ``tid``) plus a ``python_name`` column, right after
    ``name`` when there is one; empty where no dump named the thread."""
    out = df.copy()
    col = pd.Series(np.full(len(out), "", dtype=object), index=out.index)
    if names and len(out):
        keys = pd.MultiIndex.from_arrays(
            [out["pid"].to_numpy().astype(np.int64), out["tid"].to_numpy().astype(np.int64)]
        )
        lookup = pd.Series(list(names.values()), index=pd.MultiIndex.from_tuples(list(names)))
        found = lookup.reindex(keys).to_numpy()
        col[:] = np.where(pd.isna(found), "", found)
    at = list(out.columns).index("name") + 1 if "name" in out.columns else len(out.columns)
    out.insert(at, "python_name", col)
    return out
