"""An asyncio program that blocks its own loop, and measures it itself.

    python loop_target.py MODE OUT.json [--uvloop] [--debug]

MODE: ``sleep`` (a coroutine calls time.sleep(1.5) twice while 50 tasks
await asyncio.sleep(0.2)), ``varied`` (time.sleep of 0.12 to 0.5 s, five
times), ``cpu`` (a counting loop of ~0.6 s in a
coroutine), ``socket`` (a blocking recv of 0.6 s on a socketpair whose
other end a thread writes to late), ``healthy`` (only awaits, with a little
CPU between them).  OUT.json gets the program's own measurements:
``blocks`` (monotonic ns start/end of each blocking call), the loop
thread's ``cpu_ns`` (time.thread_time_ns) and ``run_delay_ns``
(/proc/thread-self/schedstat) over the loop's life, and its native id.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import sys
import threading
import time

blocks: list[tuple[int, int]] = []


def schedstat() -> tuple[int, int]:
    with open("/proc/thread-self/schedstat") as f:
        cpu, delay, _ = f.read().split()
    return int(cpu), int(delay)


async def ticker(stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.2)


def load_config() -> None:
    t = time.monotonic_ns()
    time.sleep(1.5)
    blocks.append((t, time.monotonic_ns()))


async def blocking_coroutine() -> None:
    load_config()


def nap(s: float) -> None:
    t = time.monotonic_ns()
    time.sleep(s)
    blocks.append((t, time.monotonic_ns()))


async def varied_coroutine(s: float) -> None:
    nap(s)


def crunch() -> int:
    t = time.monotonic_ns()
    n = 0
    while time.monotonic_ns() - t < 600_000_000:
        n += 1
    blocks.append((t, time.monotonic_ns()))
    return n


async def cpu_coroutine() -> None:
    crunch()


def read_reply(a: socket.socket) -> bytes:
    t = time.monotonic_ns()
    data = a.recv(10)  # blocking: the loop cannot run meanwhile
    blocks.append((t, time.monotonic_ns()))
    return data


async def socket_coroutine() -> None:
    a, b = socket.socketpair()
    threading.Timer(0.6, lambda: b.send(b"x")).start()
    read_reply(a)
    a.close()
    b.close()


async def healthy_task(seed: int, until: float) -> None:
    rnd = random.Random(seed)
    while time.monotonic() < until:
        # a little work between awaits; random sleeps never beat with the sampler
        s = sum(range(rnd.randint(2_000, 20_000)))
        del s
        await asyncio.sleep(rnd.uniform(0.001, 0.02))


async def main(mode: str) -> dict:
    c0, d0 = schedstat()
    t0 = time.thread_time_ns()
    stop = asyncio.Event()
    tickers = [asyncio.create_task(ticker(stop)) for _ in range(50)]
    await asyncio.sleep(0.5)
    if mode == "sleep":
        await blocking_coroutine()
        await asyncio.sleep(0.7)
        await blocking_coroutine()
    elif mode == "varied":
        for s in (0.15, 0.3, 0.12, 0.5, 0.2):
            await varied_coroutine(s)
            await asyncio.sleep(0.3)
    elif mode == "cpu":
        await cpu_coroutine()
    elif mode == "socket":
        await socket_coroutine()
    elif mode == "healthy":
        until = time.monotonic() + 4.0
        await asyncio.gather(*(healthy_task(i, until) for i in range(20)))
    await asyncio.sleep(0.7)
    stop.set()
    await asyncio.gather(*tickers)
    c1, d1 = schedstat()
    return {
        "cpu_ns": time.thread_time_ns() - t0,
        "schedstat_cpu_ns": c1 - c0,
        "run_delay_ns": d1 - d0,
    }


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    debug = "--debug" in sys.argv
    if debug:
        import logging

        logging.basicConfig(level=logging.WARNING)
    if "--uvloop" in sys.argv:
        import uvloop

        res = uvloop.run(main(mode), debug=debug)
    else:
        res = asyncio.run(main(mode), debug=debug)
    res.update(
        blocks=blocks,
        tid=threading.get_native_id(),
        version=list(sys.version_info[:2]),
    )
    with open(out, "w") as f:
        json.dump(res, f)
