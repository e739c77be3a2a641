"""Sampling backends: where the numbers come from.

Every backend produces the same rows (:class:`~.base.ThreadRow`,
:class:`~.base.ProcessRow`: the schema's) so the sampler, the run format
and the analysis never know which one ran.

* :mod:`.proc`, :class:`ProcBackend` (Linux): pre-opened /proc files, with
  its steady-state tick in C (:mod:`.fasttick`, ``_fasttick.c``) and its
  process-tree and fd reads in :mod:`.proctree`.
* :mod:`.psutil_backend`, :class:`PsutilBackend`: the portable base, about
  20x slower per thread.
"""

from __future__ import annotations

import os

from .base import Backend, ProcessGone, ProcessRow, ThreadRow
from .proc import ProcBackend
from .psutil_backend import PsutilBackend

__all__ = [
    "BACKENDS",
    "Backend",
    "ProcBackend",
    "ProcessGone",
    "ProcessRow",
    "PsutilBackend",
    "ThreadRow",
    "make_backend",
]

BACKENDS: dict[str, type[Backend]] = {"proc": ProcBackend, "psutil": PsutilBackend}


def make_backend(name: str) -> Backend:
    if name == "auto":
        name = "proc" if os.path.exists("/proc/self/schedstat") else "psutil"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    return BACKENDS[name]()
