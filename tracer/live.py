"""What a live view reads while the session samples: an observer that keeps
the rows the run folder gets, and the latest rows before they are written.

``circuit top`` (circuit/top.py) draws from a thread of its own; the
sampling loop calls this observer, so the hand-over is under a lock and
costs the loop a list append per written batch and, every refresh, a look
at the pending rows' tail.  The figures themselves are computed by the
analysis (analysis/live.py), from the very batches the run folder gets.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .observers import Observer, Tap
from .sink import TickBuffers

# How long a tick waits for the view's turn at most: a view that hangs
# must not stop the sampling.
TURN_TIMEOUT_S = 1.0
_PID = 0  # a thread row (without t_ns) starts with its pid
_GIL_PID = 1  # a gil row: t_ns, pid, ...


@dataclass
class Latest:
    """The newest sample of each process, taken from the pending rows:
    pid -> (t_ns, thread rows without t_ns), and pid -> its newest gil row."""

    threads: dict[int, tuple[int, list[tuple]]] = field(default_factory=dict)
    gil: dict[int, tuple] = field(default_factory=dict)
    t_ns: int = 0


class LiveFeed(Observer):
    """Hands a live view the written record batches and the latest rows.

    ``refresh_s``: how often ``tick`` is wanted (the sampling loop returns
    to Python that often to look at the pending rows).

    With :meth:`take_turns`, the view works in turns with the sampler: at
    each refresh, ``tick`` wakes the view and waits until it is done.  A
    view thread that worked beside the sampler would hold the interpreter's
    lock when the sampler wakes, and on a saturated machine the kernel
    preempts it with the lock held: the sampler then waits for a thread
    that waits for a CPU (measured: 70 of 100 Hz held beside 100 busy
    threads, against 96 Hz for ``attach``).  In turns, the sampler pauses
    for the view at a time it chooses, between two samples."""

    name = "live"

    def __init__(self, refresh_s: float = 0.5) -> None:
        self.refresh_ns = round(refresh_s * 1e9)
        self.lock = threading.Lock()
        self.run_dir = Path(".")
        self.root_pid = 0
        self._new: list[tuple[str, Any]] = []  # (table, record batch) not taken yet
        self._latest = Latest()
        self._pending: TickBuffers | None = None
        self._next_ns = 0
        self._pids: list[int] = []
        self.stopped: str | None = None  # the session's stop reason, once it ends
        self.started = threading.Event()
        self.turn_done = threading.Event()  # the view set it: its turn is over
        self._wake: int | None = None  # written to start the view's turn

    def take_turns(self, wake_fd: int) -> None:
        """At each refresh, write a byte to ``wake_fd`` (non-blocking) and
        wait for ``turn_done`` (TURN_TIMEOUT_S at most)."""
        os.set_blocking(wake_fd, False)
        self._wake = wake_fd

    def take_turns_no_more(self) -> None:
        """The view is gone: sample on without waiting for it."""
        self._wake = None
        self.turn_done.set()

    # -- observer hooks (the sampling thread) ----------------------------------

    def start(self, run_dir: Path, root_pid: int) -> None:
        self.run_dir = Path(run_dir)
        self.root_pid = root_pid
        self._next_ns = time.monotonic_ns()
        self.started.set()

    def watch_sink(self, pending: TickBuffers, taps: list[Tap]) -> None:
        self._pending = pending
        taps.append(self._on_batch)

    def _on_batch(self, table: str, batch: Any) -> None:
        with self.lock:
            self._new.append((table, batch))

    def next_tick_ns(self) -> int | None:
        return self._next_ns

    def tick(self, t_ns: int, pids: Iterable[int]) -> None:
        if t_ns < self._next_ns or self._pending is None:
            return
        self._next_ns = t_ns + self.refresh_ns
        threads, gil = latest_rows(self._pending.thread_batches, self._pending.gil)
        pids = list(pids)
        with self.lock:
            lt = self._latest
            lt.threads.update(threads)
            lt.gil.update(gil)
            for d in (lt.threads, lt.gil):
                for pid in [p for p in d if p not in pids]:
                    del d[pid]  # gone: its last rows are in the written batches
            lt.t_ns = t_ns
            self._pids = pids
        self._turn()

    def _turn(self) -> None:
        if self._wake is None:
            return
        self.turn_done.clear()
        try:
            os.write(self._wake, b"t")
        except OSError:  # full (the view is behind) or closed: no turn this time
            return
        self.turn_done.wait(TURN_TIMEOUT_S)

    def stop(self, reason: str) -> dict[str, Any]:
        self.stopped = reason
        self._wake = None  # no more turns: the view takes the last rows itself
        return {}

    # -- the view's side --------------------------------------------------------

    def take(self) -> tuple[list[tuple[str, Any]], Latest, list[int]]:
        """The batches written since the last call, a copy of the latest rows,
        and the processes traced at the last tick."""
        with self.lock:
            new, self._new = self._new, []
            lt = self._latest
            latest = Latest(dict(lt.threads), dict(lt.gil), lt.t_ns)
            return new, latest, list(self._pids)


def latest_rows(
    batches: list[tuple[int, list[tuple]]], gil: list[tuple]
) -> tuple[dict[int, tuple[int, list[tuple]]], dict[int, tuple]]:
    """The newest thread batch and gil row of each process among the pending
    ones, read from the end (a few steps: one batch per process per sample)."""
    threads: dict[int, tuple[int, list[tuple]]] = {}
    for t_ns, rows in reversed(batches[-256:]):
        if rows:
            threads.setdefault(rows[0][_PID], (t_ns, rows))
    newest: dict[int, tuple] = {}
    for row in reversed(gil[-64:]):
        newest.setdefault(row[_GIL_PID], row)
    return threads, newest
