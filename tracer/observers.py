"""Things that run beside the sampler (py-spy dumps, profiles): one interface.

The session calls these hooks from the sampling loop; an observer must be
cheap in ``tick`` (start background work, do not wait for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .sink import TickBuffers

# What a sink gives each record batch it writes: (table name, pyarrow.RecordBatch).
Tap = Callable[[str, Any], None]


class Observer:
    name = "observer"

    def start(self, run_dir: Path, root_pid: int) -> None:
        """Called once, after the target exists and before the first sample."""

    def watch_threads(self, batches: list[tuple[int, list[tuple]]]) -> None:
        """Called once after ``start``: the sink's pending thread rows, as
        (t_ns, rows of one process sample), appended to by every sample and
        emptied in place at each flush, which comes after ``tick``: an
        observer that reads the new ones in each ``tick`` sees them all."""

    def watch_sink(self, pending: TickBuffers, taps: list[Tap]) -> None:
        """Called once after ``start``: the sink's pending rows (the lists
        ``watch_threads`` describes, with the processes and gil rows beside
        them) and its taps, the callables it gives each record batch as it
        writes it, in the sampling thread: an observer that wants every row
        as written (a live view) appends one."""

    def tick(self, t_ns: int, pids: Iterable[int]) -> None:
        """Called after each sample the Python loop takes, with the traced
        PIDs: at each flush (once a second), when a process appears or
        leaves, after a signal, and by ``next_tick_ns``.  The C loop takes
        the samples in between without calling it."""

    def next_tick_ns(self) -> int | None:
        """When ``tick`` is next needed (time.monotonic_ns), or None: the
        next flush is soon enough."""
        return None

    def on_demand(self) -> None:
        """SIGUSR1 to circuit (or the API): do your on-demand work now."""

    def on_interrupt(self) -> None:
        """circuit got SIGINT/SIGTERM/...: the target may still be hung, act now."""

    def children(self) -> Iterable[int]:
        """The processes it started that may still run (py-spy...): circuit
        adopts the orphans of the traced tree, and these are not orphans."""
        return ()

    def stop(self, reason: str) -> dict[str, Any]:
        """The run is ending (``reason``: target exited, interrupted, duration...).

        Returns entries to merge into meta.json; a ``warnings`` list is appended
        to the run's warnings.
        """
        return {}
