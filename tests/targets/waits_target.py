"""Named threads that each block once in a known wait, timed by the target.

    python waits_target.py OUT.json [WAIT_S]

worker-0 sleeps, worker-1 waits in recv() on a socket, worker-2 waits for a
threading.Lock another thread holds; each for WAIT_S (default 0.2 s), after a
little CPU work, then sleeps 0.3 s.  The main thread starts them 0.2 s in,
joins them, sleeps 0.3 s and writes, per wait, the thread's name, native id
and CLOCK_MONOTONIC ns before and after the blocking call (the clock of
circuit's samples and dumps) to OUT.json.  Runs ~1.2 s + WAIT_S.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

WAIT_S = float(sys.argv[2]) if len(sys.argv) > 2 else 0.2
waits: list[dict] = []


def timed(kind: str, call, *args) -> None:
    t0 = time.monotonic_ns()
    call(*args)
    t1 = time.monotonic_ns()
    me = threading.current_thread()
    waits.append({"name": me.name, "tid": me.native_id, "kind": kind, "t0": t0, "t1": t1})


def blocked_sleep() -> None:
    timed("sleep", time.sleep, WAIT_S)


def blocked_recv() -> None:
    a, b = socket.socketpair()
    threading.Timer(WAIT_S, b.send, (b"x",)).start()
    timed("socket", a.recv, 1)


def blocked_lock() -> None:
    lock = threading.Lock()
    lock.acquire()
    threading.Timer(WAIT_S, lock.release).start()
    timed("lock", lock.acquire)


def worker(block) -> None:
    n = 0
    while n < 100_000:  # a little Python work before the wait
        n += 1
    block()
    time.sleep(0.3)


def main() -> None:
    blocks = (blocked_sleep, blocked_recv, blocked_lock)
    threads = [
        threading.Thread(target=worker, args=(b,), name=f"worker-{i}") for i, b in enumerate(blocks)
    ]
    time.sleep(0.2)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.3)
    with open(sys.argv[1], "w") as f:
        json.dump(waits, f)


if __name__ == "__main__":
    main()
