"""Sampling backends: where the numbers come from (see .proc)."""

from .proc import (
    BACKENDS,
    IDLE_REFRESH,
    PID_PROBE_MAX,
    SLOW_COUNTER_NS,
    TASKSTATS_MIN_THREADS,
    Backend,
    ProcBackend,
    ProcessGone,
    ProcessRow,
    PsutilBackend,
    ThreadRow,
    make_backend,
)

__all__ = [
    "BACKENDS",
    "IDLE_REFRESH",
    "PID_PROBE_MAX",
    "SLOW_COUNTER_NS",
    "TASKSTATS_MIN_THREADS",
    "Backend",
    "ProcBackend",
    "ProcessGone",
    "ProcessRow",
    "PsutilBackend",
    "ThreadRow",
    "make_backend",
]
