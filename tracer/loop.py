"""The sampling loop's clock: sample at a rate until told to stop.

``run_loop`` drives a :class:`~.sampler.Sampler`: absolute deadlines, the
sink's flush once a second, and, while the C tick holds every traced
process, the sleeps and ticks in C (``Sampler.burst``).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

from .sampler import Sampler

FLUSH_INTERVAL_S = 1.0
# While the C tick holds every traced process, the loop sleeps and ticks in
# C too (Sampler.burst), and Python runs at least this often: at each flush
# anyway, and sooner when run_loop's ``due`` asks (an observer's next work:
# a py-spy dump due, or one to collect): each return to Python is a sample
# on the Python path, which costs several times one in C.
BURST_MAX_NS = 1_000_000_000


@dataclass
class LoopStats:
    samples: int = 0
    c_samples: int = 0  # of which the C loop took (Sampler.burst)
    missed: int = 0
    first_ns: int = 0
    last_ns: int = 0
    cpu_s: float = 0.0
    fd_scan_cpu_s: float = 0.0  # of cpu_s, in fd scans (listing, socket lookups)

    @property
    def achieved_hz(self) -> float:
        span = (self.last_ns - self.first_ns) / 1e9
        return (self.samples - 1) / span if self.samples > 1 and span > 0 else 0.0


def run_loop(
    sampler: Sampler,
    rate_hz: float,
    wait: Callable[[float], bool],
    on_tick: Callable[[int], None] | None = None,
    signals: tuple[int, ...] = (),
    watch_fd: int = -1,
    until_ns: int | None = None,
    due: Callable[[], int | None] | None = None,
) -> LoopStats:
    """Sample at ``rate_hz`` until ``wait`` returns True, then take one last sample.

    ``wait(timeout_s)`` sleeps until the next deadline (or an event) and says
    whether to stop.  Deadlines are absolute, so the rate does not drift; a
    late sample skips the deadlines it missed and counts them.

    While the C tick holds every traced process, the sleeps and samples run
    in C (``Sampler.burst``) until Python is needed: when one of ``signals``
    (those ``wait`` takes, blocked) is pending or ``watch_fd`` is readable,
    by ``until_ns`` (the session's own end), for a flush, by the time ``due()``
    returns (None: nothing due), and at least every BURST_MAX_NS; ``on_tick``
    and ``wait`` run then, not after every sample.  A ``wait`` that stops on
    its own clock should come with ``until_ns``.
    """
    period = round(1e9 / rate_hz)
    sampler.period_ns = period
    stats = LoopStats()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    scan0 = sampler.fd_scan_ns
    sink = sampler.sink
    deadline = time.monotonic_ns()
    stats.first_ns = deadline
    stop = False
    taken = 0  # the time of a sample the burst took (finished in Python)
    while True:
        if taken:
            now, taken = taken, 0
        else:
            now = time.monotonic_ns()
            sampler.tick(now)
        stats.samples += 1
        stats.last_ns = now
        if on_tick is not None:
            on_tick(now)
        if stop or not sampler.alive:
            break
        if time.monotonic() - sink.last_flush >= FLUSH_INTERVAL_S:
            sink.flush()
        deadline += period
        now = time.monotonic_ns()
        if now >= deadline:
            skipped = (now - deadline) // period + 1
            stats.missed += skipped
            deadline += skipped * period
        if sampler.can_burst:
            until = min(now + BURST_MAX_NS, round((sink.last_flush + FLUSH_INTERVAL_S) * 1e9))
            if until_ns is not None:
                until = min(until, until_ns)
            when = due() if due is not None else None
            if when is not None:
                until = min(until, when)
            done, missed, deadline, last, taken = sampler.burst(
                deadline, period, until, signals, watch_fd
            )
            stats.samples += done
            stats.c_samples += done
            stats.missed += missed
            if done:
                stats.last_ns = last
            if taken:
                continue
            now = time.monotonic_ns()  # (the deadline may have just passed: no wait then)
        stop = wait(max(deadline - now, 0) / 1e9)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    stats.cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    stats.fd_scan_cpu_s = (sampler.fd_scan_ns - scan0) / 1e9
    return stats
