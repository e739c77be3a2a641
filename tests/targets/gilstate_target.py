"""Targets for tests/test_gilstate.py: ``python gilstate_target.py MODE SECONDS``.

Runs on every CPython >= 3.10.  Prints ``tid N`` for each worker thread (its
``threading.get_native_id()``), then ``ready`` once all are running.

MODE: spin (one pure-Python spinning thread: holds the GIL nearly always),
hash (4 threads hashing 32 MiB buffers: hashlib releases the GIL meanwhile),
idle (2 threads sleeping: nobody holds the GIL), switch (2 pure-Python
threads with a 5 ms switch interval; each hand-off of the GIL between them is
time-stamped in-process (time.monotonic, a system-wide clock) and the stamps
are printed as JSON at the end).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time

BUF = 32 << 20


def spin(end: float) -> None:
    x = 0
    while time.monotonic() < end:
        for i in range(200):
            x += i


def hashing(end: float) -> None:
    buf = bytes(BUF)
    while time.monotonic() < end:
        hashlib.sha256(buf).digest()


def idle(end: float) -> None:
    while time.monotonic() < end:
        time.sleep(0.05)


owner = [-1]
stamps: list[float] = []


def handing_off(end: float) -> None:
    # Only the GIL holder runs Python: a change of `owner` is a hand-off.
    me = threading.get_ident()
    while time.monotonic() < end:
        for _ in range(100):
            if owner[0] != me:
                owner[0] = me
                stamps.append(time.monotonic())


def main() -> None:
    mode, secs = sys.argv[1], float(sys.argv[2])
    modes = {"spin": (spin, 1), "hash": (hashing, 4), "idle": (idle, 2), "switch": (handing_off, 2)}
    work, n = modes[mode]
    if mode == "switch":
        sys.setswitchinterval(0.005)
    end = time.monotonic() + secs
    started = threading.Barrier(n + 1)
    tids: list[int] = []

    def run() -> None:
        tids.append(threading.get_native_id())
        started.wait()
        work(end)

    ts = [threading.Thread(target=run, name=f"w{i}") for i in range(n)]
    for t in ts:
        t.start()
    started.wait()
    for tid in tids:
        print(f"tid {tid}")
    print("ready", flush=True)
    if mode == "idle":
        # The main thread idles too (without holding the GIL).
        idle(end)
    for t in ts:
        t.join()
    if mode == "switch":
        print(json.dumps(stamps), flush=True)


if __name__ == "__main__":
    main()
