"""Classic workloads under every concurrency model.

``python -m circuit.workloads WORKLOAD --model MODEL --tasks N --scale S`` runs
one workload as an ordinary program, so circuit traces it like any user script.

Workloads (what one task does):

    io-sleep   the article's two "API calls": sleep 4 and 3 units (cycling for N tasks)
    io-http    one real HTTP request to a server process on loopback that answers
               after 4 or 3 units (cycling), without blocking itself
    cpu-count  the article's counting loop: 100,000,000 increments per task at scale 1
    cpu-hash   SHA-256 of 4 GiB per task at scale 1, in 4 MiB calls: C code that
               releases the GIL, so threads do run it on several CPUs at once
    disk       write a file, fsync it, drop it from the page cache, read it back
    mixed      alternate CPU bursts and sleeps
    io-blocked io-sleep's waits, half of each a blocking time.sleep even in a
               coroutine, then a quarter more awaited: under the asyncio models the
               blocking halves stall the event loop, one after another

Models (how the N tasks run): sequential, threads, asyncio, processes,
thread-pool, process-pool, and asyncio-uvloop when uvloop is installed.
CPU and file work under the asyncio models runs on the event loop as written,
which blocks the loop: that is the lesson, not a bug.

This module stays light: it imports nothing beyond the standard library, so
it also runs under another interpreter (``--python``).
"""

from __future__ import annotations

import math

WORKLOADS = ("io-sleep", "io-http", "cpu-count", "cpu-hash", "disk", "mixed", "io-blocked")
MODELS_ALL = (
    "sequential",
    "threads",
    "asyncio",
    "processes",
    "thread-pool",
    "process-pool",
    "asyncio-uvloop",
)
ASYNC_MODELS = ("asyncio", "asyncio-uvloop")

# io-http's loopback server: a process of the traced tree that serves the
# workload rather than being it.
SERVER_MODULE = "circuit.workloads.server"
# Modules a workload runs as helper processes beside its own: the bench
# leaves them out of the workload's figures (its CPU, threads, fds, waits).
HELPER_MODULES = (SERVER_MODULE,)

# The article's two API calls take 4 s and 3 s; task i lasts UNITS[i % 2] * scale.
UNITS = (4.0, 3.0)
# The article's counting loop, per task at scale 1.
COUNT = 100_000_000
# cpu-hash: bytes hashed per task at scale 1, and per hashlib call.  hashlib
# releases the GIL for the whole call on buffers this size, so the time goes to
# C code that needs no GIL; one buffer per task, hashed again and again.
HASH_BYTES = 4 * 2**30
HASH_CHUNK = 4 * 2**20
# disk: bytes written (and read back) per task at scale 1.
DISK_BYTES = 64 * 2**20
# mixed: per round, a CPU burst of MIXED_COUNT increments then MIXED_WAIT_S of sleep,
# both times scale; roughly as much CPU as waiting on this machine's class of CPU.
MIXED_COUNT = 10_000_000
MIXED_WAIT_S = 0.5
MIXED_ROUNDS = 4


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def available_models() -> tuple[str, ...]:
    """The models this interpreter can run (asyncio-uvloop only with uvloop)."""
    if uvloop_available():
        return MODELS_ALL
    return tuple(m for m in MODELS_ALL if m != "asyncio-uvloop")


def duration(i: int, scale: float) -> float:
    """Seconds task ``i`` waits in io-sleep and io-http: 4, 3, 4, 3... units."""
    return UNITS[i % len(UNITS)] * scale


def check(workload: str, model: str, tasks: int, scale: float) -> str | None:
    """None if the combination is valid, else a one-line message saying what is."""
    if workload not in WORKLOADS:
        return f"unknown workload {workload!r} (valid: {', '.join(WORKLOADS)})"
    if model not in MODELS_ALL:
        return f"unknown model {model!r} (valid: {', '.join(available_models())})"
    if model == "asyncio-uvloop" and not uvloop_available():
        return (
            "model 'asyncio-uvloop' needs uvloop, which this interpreter cannot import "
            f"(pip install uvloop; valid here: {', '.join(available_models())})"
        )
    if tasks < 1:
        return f"--tasks must be at least 1, got {tasks}"
    if not (scale > 0 and math.isfinite(scale)):
        return f"--scale must be a finite number greater than 0, got {scale:g}"
    return None
