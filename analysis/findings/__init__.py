"""Findings: the run's evidence turned into a ranked list of diagnoses.

Each kind is a module with ``KIND`` and ``find(ev: Evidence) -> list[Finding]``,
a pure function of the run's frames (:class:`~.base.Evidence`). A new kind
(the event loop's ``loop-blocked``) is one more module listed in
:data:`KINDS`. Rules, thresholds, evidence keys and limits: docs/findings.md.

    >>> from circuit.analysis.findings import find_run
    >>> [f["title"] for f in find_run(circuit.load("RUN"))]
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pandas as pd

from . import cpu, fds, gil, io, locks, loops
from .base import SEVERITIES, Evidence, Finding

KINDS: tuple[ModuleType, ...] = (loops, gil, locks, fds, cpu, io)

__all__ = ["KINDS", "SEVERITIES", "Evidence", "Finding", "find", "find_frames", "find_run", "rank"]


def rank(findings: list[Finding]) -> list[Finding]:
    """Most severe first; within a severity, the most time lost first, then
    the earliest."""
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), -f.lost_s, f.start_s))


def find(ev: Evidence) -> list[Finding]:
    """Every kind's findings on ``ev``, ranked."""
    out: list[Finding] = []
    for kind in KINDS:
        out += kind.find(ev)
    return rank(out)


def find_frames(
    meta: dict[str, Any],
    threads: pd.DataFrame,
    processes: pd.DataFrame,
    fds: pd.DataFrame | None = None,
    stacks: pd.DataFrame | None = None,
    gil: pd.DataFrame | None = None,
    summary: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The findings of a run's frames as plain dicts (``circuit summary
    --json``'s ``findings``). ``threads``: classified (futex waits on the GIL
    say ``gil``); ``summary``: the run's summary for the GIL figures and the
    wall time (without it, no ``gil-contention``)."""
    ev = Evidence(meta, threads, processes, fds, stacks, gil, summary)
    return [f.to_dict() for f in find(ev)]


def find_run(run: Any, summary: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """:func:`find_frames` of a loaded run (``circuit.load``)."""
    if summary is None:
        summary = run.summary()
        if "findings" in summary:
            return summary["findings"]
    return find_frames(
        run.meta,
        run.threads,
        run.processes,
        getattr(run, "fds", None),
        getattr(run, "stacks", None),
        getattr(run, "gil", None),
        summary,
    )
