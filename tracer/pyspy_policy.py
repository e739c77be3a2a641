"""When to take a py-spy dump of which process: pure policy, no processes.

:class:`DumpPolicy` reads the sampler's thread rows and the clock and says
which Python processes to dump now, and why (the dump's ``trigger``):

* ``early``: a Python process (or a thread in it) appeared: its first dump
  comes EARLY_NS after it is seen (a starting interpreter that cannot be
  dumped yet is retried every EARLY_RETRY_NS), so a short run still gets
  thread names and stacks; new threads bring another one, NEW_THREADS_NS
  after the first of them (threads started together share it);
* ``long-wait``: a thread of a Python process has sat in one blocked wait
  (same wait reason, same futex/fd argument, no voluntary context switch)
  for LONG_WAIT_NS, and no dump of its process was taken since the wait
  began: one dump, inside that wait;
* ``loop-stall``: a thread seen waiting in ``epoll_wait`` (an event loop's
  selector, most likely) has been out of that wait (running, or in any
  other wait) for ``loop_stall_ns`` (half the loop threshold), and no dump
  of its process was taken since it left: one dump, while the stall lasts,
  so the stack names what blocks the loop (docs/loops.md);
* ``exit``: the root Python process's last non-main thread exited (its
  thread count fell to one after being more): a threaded program ending
  (``threading._shutdown`` has joined its workers) or a pool shut down;
* ``periodic``: the steady state (``--dump-interval``), see :meth:`periodic_s`.

Every dump but ``demand`` and ``final`` (asked for by the user) is paid from
a CPU budget (a token bucket: BURST_S of py-spy CPU at once, then BUDGET of
one core), and a process is dumped at most once per MIN_GAP_NS for
``early`` and ``long-wait`` (a ``loop-stall`` dump comes at once: a stall
of the threshold may last only twice as long as it takes to notice).  docs/pyspy.md and docs/performance.md give
the measured cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# A Python process's first dump, after it is seen; then retries this often
# while py-spy cannot read the interpreter yet (it is still starting), this
# many times.
EARLY_NS = 50_000_000
EARLY_RETRY_NS = 50_000_000
EARLY_TRIES = 8
# New threads in a process already dumped: dumped this long after the first
# of them is seen (a pool starting its workers is one dump, not one per worker).
NEW_THREADS_NS = 50_000_000
# A thread in one blocked wait this long gets a dump of its process.  With
# the rows looked at every WATCH_NS and py-spy taking ~20-40 ms to read the
# process, a wait of ~100 ms or more gets a stack taken inside it.
LONG_WAIT_NS = 40_000_000
LONG_WAIT = "long-wait"  # the trigger's name (dumps.jsonl `trigger`)
WATCH_NS = 25_000_000
# After a blocking dump, a thread's context switches move on for this long
# (measured: ~20-40 ms) while it goes back to the same wait.
RESUME_NS = 50_000_000
# Triggered dumps (early, long-wait) of one process at most this often.
MIN_GAP_NS = 100_000_000
# The automatic dumps' CPU budget: this share of one core, with BURST_S of
# py-spy CPU available at once (so a short run gets its first dumps).
BUDGET = 0.02
BURST_S = 0.15
# The periodic "auto" interval keeps those dumps under this share of one core.
AUTO_BUDGET = 0.005
AUTO_MIN_S = 1.0
AUTO_GUESS_S = 0.012  # CPU per dump assumed until one has been measured

# An event loop out of its selector this long gets a dump (half of
# asyncio's slow_callback_duration, circuit's default --loop-threshold).
LOOP_STALL_NS = 50_000_000
LOOP_STALL = "loop-stall"  # the trigger's name (dumps.jsonl `trigger`)
# Dumps of threads held in one place (a wait, a stalled loop) read without
# stopping the target: stopping it would cut the very wait looked at.
UNSTOPPED = (LONG_WAIT, LOOP_STALL)

# Positions in a thread row (a `threads` row without t_ns: tracer/schema.py).
_TID, _STATE, _WAIT, _SYSCALL, _ARG0, _CTX_VOL = 1, 3, 4, 5, 6, 12


def _epoll_calls() -> frozenset[int]:
    from .waits import syscall_table

    return frozenset(nr for name, nr in syscall_table().items() if name.startswith("epoll_"))


_EPOLL = _epoll_calls()


@dataclass
class _Wait:
    key: tuple[object, ...]
    since_ns: int
    last_ns: int  # its latest row


@dataclass
class _Proc:
    seen_ns: int
    early_ns: int | None  # when its early dump is due; None: none pending
    tries: int = 0
    last_ns: int = -1  # the last dump of it that started
    end_ns: int | None = None  # when it ended; None: still running
    dumped: bool = False  # a dump of it succeeded
    tids: set[int] = field(default_factory=set)  # threads seen so far
    threads: int = 0  # thread count at its latest sample
    most: int = 0  # most threads it had since its count was last one
    exit_due: bool = False
    waits: dict[int, _Wait] = field(default_factory=dict)
    selectors: dict[int, tuple[int, int]] = field(default_factory=dict)  # tid -> (syscall, fd)
    out_since: dict[int, int] = field(default_factory=dict)  # loop tid -> left its selector


@dataclass
class DumpPolicy:
    """Which processes to dump when; ``auto`` False: only what is asked for."""

    auto: bool = True
    interval: float | None = None  # periodic: seconds, None: auto, 0: none
    budget: float = BUDGET
    burst_s: float = BURST_S
    root: int = 0  # the root Python process (the exit trigger watches it)
    loop_stall_ns: int = LOOP_STALL_NS
    procs: dict[int, _Proc] = field(default_factory=dict)
    _credit: float = field(default=BURST_S, init=False)  # CPU seconds py-spy may spend now
    _credit_ns: int = field(default=-1, init=False)
    per_dump_s: float = field(default=AUTO_GUESS_S, init=False)

    # -- what the sampler saw ----------------------------------------------------

    def python(self, t_ns: int, pids: Iterable[int]) -> None:
        """The Python processes traced at ``t_ns``: new ones get an early dump."""
        live = set(pids)
        for pid in live - self.procs.keys():
            self.procs[pid] = _Proc(t_ns, t_ns + EARLY_NS if self.auto else None)
            if not self.root:
                self.root = pid
        for pid in self.procs.keys() - live:
            del self.procs[pid]

    def rows(self, batches: Iterable[tuple[int, list[tuple]]]) -> None:
        """Thread rows, (t_ns, rows of one process sample), oldest first."""
        procs = self.procs
        for t_ns, rows in batches:
            if not rows:
                continue
            p = procs.get(rows[0][0])
            if p is None:
                continue  # not a Python process
            p.threads = len(rows)
            if p.threads > 1:
                p.most = max(p.most, p.threads)
            elif p.most > 1:
                p.most = 0
                p.exit_due = self.auto
            waits = p.waits
            known = bool(p.tids)  # (a process's first rows are not new threads)
            for row in rows:
                tid = row[_TID]
                if tid not in p.tids:
                    p.tids.add(tid)
                    if known and p.last_ns >= 0 and p.early_ns is None and self.auto:
                        p.early_ns = t_ns + NEW_THREADS_NS
                if row[_STATE] in ("t", "T"):
                    continue  # stopped (by a blocking dump, say): not the program's doing
                wait = row[_WAIT]
                self._loop_row(p, tid, t_ns, wait, row)
                if wait == "running":
                    waits.pop(tid, None)
                    continue
                key = (wait, row[_ARG0], row[_CTX_VOL])
                w = waits.get(tid)
                if w is None:
                    waits[tid] = _Wait(key, t_ns, t_ns)
                elif w.key != key:
                    if key[:2] == w.key[:2] and self._stopped_by_dump(p, w):
                        w.key = key  # the same wait, restarted after a blocking dump
                    else:
                        waits[tid] = _Wait(key, t_ns, t_ns)
                w = waits[tid]
                w.last_ns = t_ns
            if len(waits) > p.threads or len(p.selectors) > p.threads:  # threads that exited
                alive = {row[_TID] for row in rows}
                for d in (waits, p.selectors, p.out_since):
                    for tid in [t for t in d if t not in alive]:
                        del d[tid]

    @staticmethod
    def _loop_row(p: _Proc, tid: int, t_ns: int, wait: str, row: tuple) -> None:
        """Follow a thread that waits in epoll: when it left that wait."""
        if wait == "poll" and row[_SYSCALL] in _EPOLL:
            p.selectors[tid] = (row[_SYSCALL], row[_ARG0])
        sel = p.selectors.get(tid)
        if sel is None:
            return
        if wait == "poll" and (row[_SYSCALL], row[_ARG0]) == sel:
            p.out_since.pop(tid, None)
        else:
            p.out_since.setdefault(tid, t_ns)

    @staticmethod
    def _stopped_by_dump(p: _Proc, w: _Wait) -> bool:
        """Whether a dump of ``p`` that began during wait ``w`` was running,
        or had just ended, at its latest row: a blocking dump stops the
        threads, which then go back to the same sleep (with one or two more
        voluntary context switches, up to a few samples later)."""
        return p.last_ns >= w.since_ns and (p.end_ns is None or p.end_ns + RESUME_NS >= w.last_ns)

    # -- what to dump ------------------------------------------------------------

    def due(self, now_ns: int, busy: Iterable[int] = ()) -> list[tuple[int, str]]:
        """(pid, trigger) to dump now; ``busy``: pids with a dump running."""
        if not self.auto:
            return []
        self._refill(now_ns)
        busy = set(busy)
        out: list[tuple[int, str]] = []
        for pid, p in self.procs.items():
            if pid in busy:
                continue
            trigger = None
            if p.exit_due and pid == self.root:
                trigger = "exit"
            elif self._loop_stall(p, now_ns):
                trigger = LOOP_STALL
            elif p.dumped and now_ns - p.last_ns < MIN_GAP_NS:
                continue  # (before its first dump, retries keep their own pace)
            elif p.early_ns is not None and now_ns >= p.early_ns:
                trigger = "early"
            elif self._long_wait(p, now_ns):
                trigger = LONG_WAIT
            if trigger is None:
                continue
            if self._credit < self.per_dump_s:
                break  # over budget: nothing else either, until it refills
            self._credit -= self.per_dump_s
            out.append((pid, trigger))
        return out

    def _loop_stall(self, p: _Proc, now_ns: int) -> bool:
        """A loop thread out of its selector for loop_stall_ns, with no dump
        of its process since it left (one dump per stall)."""
        for since in p.out_since.values():
            if since > p.last_ns and now_ns - since >= self.loop_stall_ns:
                return True
        return False

    def _long_wait(self, p: _Proc, now_ns: int) -> bool:
        for w in p.waits.values():
            if w.since_ns > p.last_ns and now_ns - w.since_ns >= LONG_WAIT_NS:
                return True
        return False

    def _refill(self, now_ns: int) -> None:
        if self._credit_ns >= 0:
            gained = (now_ns - self._credit_ns) / 1e9 * self.budget
            self._credit = min(self.burst_s, self._credit + gained)
        self._credit_ns = now_ns

    def started(self, pid: int, t_ns: int, trigger: str) -> None:
        """A dump of ``pid`` started at ``t_ns`` (any trigger): it covers the
        waits already begun."""
        p = self.procs.get(pid)
        if p is None:
            return
        p.last_ns, p.end_ns = t_ns, None
        p.early_ns = None  # it names the threads alive now
        if trigger == "exit":
            p.exit_due = False

    def finished(self, pid: int, end_ns: int) -> None:
        """A dump of ``pid`` ended (py-spy wrote its result) at ``end_ns``."""
        p = self.procs.get(pid)
        if p is not None:
            p.end_ns = end_ns

    def failed(self, pid: int, t_ns: int) -> bool:
        """A dump of ``pid`` failed (not for lack of permission): while none
        of it has succeeded (an interpreter still starting), an early one is
        retried.  Whether it will be."""
        p = self.procs.get(pid)
        if p is None or p.dumped or not self.auto or p.tries + 1 >= EARLY_TRIES:
            return False
        p.tries += 1
        p.early_ns = t_ns + EARLY_RETRY_NS
        return True

    def succeeded(self, pid: int) -> None:
        p = self.procs.get(pid)
        if p is not None:
            p.dumped = True

    def cost(self, per_dump_s: float) -> None:
        """The measured CPU of one dump (mean so far)."""
        if per_dump_s > 0:
            self.per_dump_s = per_dump_s

    def next_ns(self, now_ns: int) -> int | None:
        """When the rows should next be looked at (None: the flush will do)."""
        if not self.auto or not self.procs:
            return None
        times = [now_ns + WATCH_NS]
        times += [p.early_ns for p in self.procs.values() if p.early_ns is not None]
        return min(times)

    # -- periodic ----------------------------------------------------------------

    def periodic_s(self, dumps: int) -> float:
        """Seconds to the next periodic round, which will take ``dumps`` dumps:
        the interval asked for, or (auto) as often as keeps those dumps under
        AUTO_BUDGET of one core, at most once every AUTO_MIN_S."""
        if self.interval is not None:
            return self.interval
        return max(AUTO_MIN_S, dumps * self.per_dump_s / AUTO_BUDGET)
