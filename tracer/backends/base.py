"""What every sampling backend provides, and the rows it produces.

The rows' layouts come from the run format (:mod:`circuit.tracer.schema`):
a :class:`ThreadRow` is a ``threads`` row and a :class:`ProcessRow` the
start of a ``processes`` row, each without its timestamp.  A column added to
the schema is a field of these rows, filled by each backend (and by the C
tick, tracer/backends/_fasttick.c, told where each field goes from them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import namedtuple
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from ..schema import PROCESS_SAMPLE_FIELDS, THREAD_FIELDS
from ..sockdiag import Sock
from ..waits import Classifier

if TYPE_CHECKING:
    from ..sink import Sink
    from .fasttick import FastPath

# Tuples, as the writer stores them, with the schema's names for their
# fields: ``row.wait``, ``row.ctx_vol``.
ThreadRow = namedtuple("ThreadRow", [c for c, _ in THREAD_FIELDS if c != "t_ns"])  # type: ignore[misc]
ProcessRow = namedtuple("ProcessRow", [c for c, _ in PROCESS_SAMPLE_FIELDS])  # type: ignore[misc]

# ``new_row(ThreadRow, values)``: a row from a tuple in field order, a
# fifth of the cost of ThreadRow(...) (whose __new__ is Python code): the
# sampler builds one for every thread that ran.
new_row = tuple.__new__


class ProcessGone(Exception):
    """The process exited between two reads; a normal race."""


class Backend(ABC):
    name: str = "?"

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.classify = Classifier()
        # More runnable tasks than CPUs at this tick: a thread asleep in its
        # last row may have been woken and be waiting for a CPU, so it is
        # read again even though it has not run (check_saturation).
        self.saturated = False

    def check_saturation(self) -> None:  # noqa: B027 (backends without the count never are)
        """Set ``saturated`` for this tick."""

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)

    def fast_path(self, sink: Sink) -> FastPath | None:
        """The backend's steady-state tick in C, writing to ``sink``, if it
        has one that can run here."""
        return None

    @abstractmethod
    def open(self, pid: int) -> Any:
        """A handle for sampling ``pid``; raises ProcessGone."""

    @abstractmethod
    def close(self, handle: Any) -> None: ...

    def shutdown(self) -> None:  # noqa: B027 (most backends hold nothing more)
        """Release what the backend holds beyond its processes (sockets...)."""

    @abstractmethod
    def sample(
        self, handle: Any, fd_kinds: dict[int, str], t_ns: int = 0
    ) -> tuple[ProcessRow, list[ThreadRow], bool]:
        """(process row, thread rows, ran) for one process; raises ProcessGone.

        ``t_ns`` is the sample's time (slow counters are re-read at most every
        SLOW_COUNTER_NS; 0: read everything).  The rows list may be the very
        object returned last time, when nothing changed: never mutate it.

        ``ran`` is False when no thread of the process was on a CPU since the
        previous sample (so it cannot have forked or opened anything).  The
        handle's ``zombie`` attribute is then True if the process has exited.
        """

    @abstractmethod
    def fds(self, handle: Any, known: dict[int, str]) -> dict[int, str] | None:
        """fd number -> link target (``socket:[123]``, a path...); None if unreadable.

        ``known`` is the previous answer, so a backend may resolve only new fds.
        Negative numbers stand for fds the backend can count but not name.
        """

    def fd_count(self, handle: Any) -> int | None:
        """How many fds are open now, if the backend can tell cheaply; else None."""
        return None

    @abstractmethod
    def command(self, handle: Any) -> bytes:
        """The raw command line; it changes when the process execs."""

    @abstractmethod
    def sockets(self, pid: int, fds: dict[int, int]) -> dict[int, Sock]:
        """socket inode -> Sock (protocol, local and remote address), for
        the sockets ``fds`` (fd number -> socket inode) that can be found."""

    @abstractmethod
    def new_children(
        self,
        traced: set[int],
        exclude: set[int],
        adopter: int | None = None,
        own: Collection[int] = (),
    ) -> list[tuple[int, int]]:
        """(pid, ppid) of processes whose parent is traced and that are not yet
        traced; with ``adopter`` (circuit, made a child subreaper), also its
        children but ``own``: orphans of the traced tree, reparented to it."""

    @abstractmethod
    def info(self, pid: int) -> dict[str, Any]:
        """Static facts: ppid, name, exe, cmdline (list of str)."""
