"""Four named threads, each in one kind of wait, for ``circuit top``.

    python top_target.py [SECONDS] [EXIT_CODE]

``sleeper`` sleeps, ``spinner`` spins on the CPU (pure Python), ``locked``
waits for a threading.Lock the main thread holds, ``poller`` waits in
epoll on a pipe nobody writes.  Prints ``ready`` once all four are in
place, then runs SECONDS (default: until killed) and exits with EXIT_CODE
(default 0).
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time


def sleeper() -> None:
    while True:
        time.sleep(10)


def spinner() -> None:
    n = 0
    while True:
        n += 1


def locked(lock: threading.Lock) -> None:
    lock.acquire()


def poller() -> None:
    r, _w = os.pipe()
    ep = select.epoll()
    ep.register(r, select.EPOLLIN)
    while True:
        ep.poll(10)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else None
    code = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    lock = threading.Lock()
    lock.acquire()
    for name, fn, args in (
        ("sleeper", sleeper, ()),
        ("spinner", spinner, ()),
        ("locked", locked, (lock,)),
        ("poller", poller, ()),
    ):
        threading.Thread(target=fn, args=args, name=name, daemon=True).start()
    print("ready", flush=True)
    if seconds is None:
        threading.Event().wait()
    time.sleep(seconds)
    os._exit(code)


if __name__ == "__main__":
    main()
