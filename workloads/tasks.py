"""What one task of each workload does, as blocking code and as a coroutine.

The coroutine versions are what people write: ``await asyncio.sleep`` and an
async HTTP client where an awaitable exists, and the blocking code as written
(the counting loop, file I/O) where it does not, which stalls the event loop.

Task functions are module-level and take a picklable :class:`Params`, so the
process models can run them in children.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

from circuit.marks import mark

from . import (
    DISK_BYTES,
    HASH_BYTES,
    HASH_CHUNK,
    MIXED_COUNT,
    MIXED_ROUNDS,
    MIXED_WAIT_S,
    duration,
)

CHUNK = 2**20
# io-blocked: a task's wait, in units of its io-sleep duration: awaited,
# then blocking (time.sleep, even in a coroutine), then awaited.
BLOCKED_SPLIT = (0.5, 0.5, 0.25)


@dataclass(frozen=True)
class Params:
    workload: str
    tasks: int
    scale: float
    latency: float | None = None  # io-http: fixed server latency instead of 4/3 units
    url: str = ""  # io-http: the server, set once it listens
    dir: str = ""  # disk: the temporary folder for this run


def count(n: int) -> int:
    # The article's loop, kept as written: pure bytecode, holds the GIL throughout.
    count = 0
    while count < n:
        count = count + 1
    return count


def hash_calls(scale: float) -> int:
    """How many HASH_CHUNK-byte hashlib calls one cpu-hash task makes (at least 1)."""
    return max(1, round(HASH_BYTES * scale / HASH_CHUNK))


def http_delay(p: Params, i: int) -> float:
    return p.latency if p.latency is not None else duration(i, p.scale)


def http_url(p: Params, i: int) -> str:
    return f"{p.url}/?task={i}&delay={http_delay(p, i):.6f}"


# ------------------------------------------------------------------ blocking


def _io_sleep(p: Params, i: int) -> None:
    time.sleep(duration(i, p.scale))


def _io_blocked(p: Params, i: int) -> None:
    time.sleep(duration(i, p.scale) * sum(BLOCKED_SPLIT))


def _io_http(p: Params, i: int) -> None:
    import requests

    # A timeout is what real code sets; it makes the socket non-blocking under
    # the hood, so the thread waits in poll() and then reads.
    r = requests.get(http_url(p, i), timeout=http_delay(p, i) + 30)
    r.raise_for_status()


def _cpu_count(p: Params, i: int) -> None:
    from . import COUNT

    count(int(COUNT * p.scale))


def _cpu_hash(p: Params, i: int) -> None:
    # One buffer per task, made once: the time goes to hashing, not to
    # allocating.  Each call hashes all of it with the GIL released.
    block = bytes([i % 251]) * HASH_CHUNK
    for _ in range(hash_calls(p.scale)):
        hashlib.sha256(block).digest()


def _disk(p: Params, i: int) -> None:
    size = max(int(DISK_BYTES * p.scale), CHUNK)
    path = os.path.join(p.dir, f"task-{i}.bin")
    block = bytes([i % 251]) * CHUNK
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = size
        while left > 0:
            left -= os.write(fd, block[: min(left, CHUNK)])
        os.fsync(fd)
        # Drop the pages we just wrote so the read below goes to the device
        # instead of the page cache.
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    got = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            b = os.read(fd, CHUNK)
            if not b:
                break
            got += len(b)
    finally:
        os.close(fd)
    os.unlink(path)
    if got != size:
        raise OSError(f"read back {got} bytes of {size} from {path}")


def _mixed(p: Params, i: int) -> None:
    for _ in range(MIXED_ROUNDS):
        count(int(MIXED_COUNT * p.scale))
        time.sleep(MIXED_WAIT_S * p.scale)


SYNC = {
    "io-sleep": _io_sleep,
    "io-blocked": _io_blocked,
    "io-http": _io_http,
    "cpu-count": _cpu_count,
    "cpu-hash": _cpu_hash,
    "disk": _disk,
    "mixed": _mixed,
}


def run_task(p: Params, i: int) -> None:
    """Task ``i``, blocking, between ``task-start`` and ``task-end`` marks."""
    mark("task-start", task=i)
    try:
        SYNC[p.workload](p, i)
    finally:
        mark("task-end", task=i)


# --------------------------------------------------------------------- async


async def _aio_sleep(p: Params, i: int, ctx: dict[str, Any]) -> None:
    await asyncio.sleep(duration(i, p.scale))


async def _aio_blocked(p: Params, i: int, ctx: dict[str, Any]) -> None:
    d = duration(i, p.scale)
    await asyncio.sleep(d * BLOCKED_SPLIT[0])
    # The mistake the loop analysis finds: a blocking call in a coroutine.
    # Every other task waits while it sleeps (docs/loops.md).
    time.sleep(d * BLOCKED_SPLIT[1])
    # A wait after it: the loop idles again before the program ends, so the
    # stall has an end a sample can see.
    await asyncio.sleep(d * BLOCKED_SPLIT[2])


async def _aio_http(p: Params, i: int, ctx: dict[str, Any]) -> None:
    async with ctx["session"].get(http_url(p, i)) as r:
        r.raise_for_status()
        await r.read()


async def _aio_cpu_count(p: Params, i: int, ctx: dict[str, Any]) -> None:
    _cpu_count(p, i)  # on the loop, as written: nothing to await


async def _aio_cpu_hash(p: Params, i: int, ctx: dict[str, Any]) -> None:
    _cpu_hash(p, i)  # on the loop, as written: the loop waits for each call


async def _aio_disk(p: Params, i: int, ctx: dict[str, Any]) -> None:
    _disk(p, i)  # plain file I/O blocks the loop; asyncio has no async files


async def _aio_mixed(p: Params, i: int, ctx: dict[str, Any]) -> None:
    for _ in range(MIXED_ROUNDS):
        count(int(MIXED_COUNT * p.scale))
        await asyncio.sleep(MIXED_WAIT_S * p.scale)


ASYNC = {
    "io-sleep": _aio_sleep,
    "io-blocked": _aio_blocked,
    "io-http": _aio_http,
    "cpu-count": _aio_cpu_count,
    "cpu-hash": _aio_cpu_hash,
    "disk": _aio_disk,
    "mixed": _aio_mixed,
}


async def run_task_async(p: Params, i: int, ctx: dict[str, Any]) -> None:
    mark("task-start", task=i)
    try:
        await ASYNC[p.workload](p, i, ctx)
    finally:
        mark("task-end", task=i)


async def run_all_async(p: Params) -> None:
    """All tasks on one event loop; io-http shares one client session, as usual."""
    ctx: dict[str, Any] = {}
    if p.workload == "io-http":
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=max(http_delay(p, i) for i in range(p.tasks)) + 30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            ctx["session"] = session
            await asyncio.gather(*(run_task_async(p, i, ctx) for i in range(p.tasks)))
    else:
        await asyncio.gather(*(run_task_async(p, i, ctx) for i in range(p.tasks)))
