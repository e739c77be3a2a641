"""Where the sampler puts its rows: a Sink (RunWriter is the one that writes a run).

The sampler only adds rows; the sink decides when they are written
(``flush``, which run_loop calls at least once a second).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class TickBuffers(NamedTuple):
    """The lists the C tick appends to: the same objects for the sink's
    whole life (``flush`` empties them in place)."""

    processes: list[tuple]  # rows of the processes table
    thread_batches: list[tuple[int, list[tuple]]]  # (t_ns, thread rows) per process sample
    gil: list[tuple]  # rows of the gil table


class Sink(Protocol):
    last_flush: float  # time.monotonic() of the last flush

    def add(self, table: str, row: tuple) -> None:
        """One row of ``table``, in the schema's column order."""

    def add_threads(self, t_ns: int, rows: list[tuple]) -> None:
        """The thread rows (without t_ns) of one process sample at ``t_ns``.

        The same list, or the same row objects, may come again in later
        samples (what did not change is not rebuilt): a sink must not
        mutate them, and may store each distinct one once.
        """

    def tick_buffers(self) -> TickBuffers:
        """Where the C tick appends what ``add`` and ``add_threads`` would:
        the same lists every time (the C tick keeps them)."""
        ...

    def flush(self) -> None:
        """Write out what was added since the last flush."""
