"""Targets for the GIL and py-spy integration tests: ``python gil_target.py MODE N SECONDS``.

MODE: threads (N CPU-bound threads), switch (N CPU-bound threads counting
GIL hand-offs in-process, switch interval argv[4], prints JSON), procs (N CPU-bound processes), sleep (N
threads in time.sleep loops), lock (one thread blocked on a threading.Lock
held by the main thread, beside one CPU-bound thread), dump (asks circuit for
an on-demand py-spy dump through circuit.dump(), then spins), hang (a thread
blocked on a lock forever: for Ctrl-C tests).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import sys
import threading
import time


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        for i in range(200):
            x += i


def spin_counting(k: int, seconds: float, owner: list[int], count: list[int]) -> None:
    # Only the GIL holder runs Python: a change of `owner` is a GIL hand-off
    # (ground truth for the switch rate measured from outside).
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(100):
            if owner[0] != k:
                owner[0] = k
                count[0] += 1


def snooze(seconds: float) -> None:
    # I/O-like: short wake-ups at irregular times (threads in lockstep would
    # genuinely contend for the GIL at every wake-up).
    rng = random.Random(threading.get_ident())
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.005, 0.03))


def blocked(lock: threading.Lock) -> None:
    with lock:
        pass


def main() -> None:
    mode, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if mode == "procs":
        ctx = mp.get_context("fork")
        ps = [ctx.Process(target=spin, args=(secs,)) for _ in range(n)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        return
    if mode in ("lock", "hang"):
        lock = threading.Lock()
        lock.acquire()
        w = threading.Thread(target=blocked, args=(lock,), name="waiter")
        w.start()
        if mode == "hang":
            print("ready", flush=True)
            w.join()  # forever: the test interrupts us
        spin(secs)
        lock.release()
        w.join()
        return
    if mode == "switch":
        sys.setswitchinterval(float(sys.argv[4]) if len(sys.argv) > 4 else 0.005)
        owner, count = [-1], [0]
        ts = [
            threading.Thread(target=spin_counting, args=(i, secs, owner, count), name=f"w{i}")
            for i in range(n)
        ]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rate = count[0] / (time.monotonic() - t0)
        print(f'{{"switches_per_s": {rate:.1f}, "interval": {sys.getswitchinterval()}}}')
        return
    if mode == "dump":
        import circuit

        time.sleep(0.3)
        circuit.dump()
        spin(secs)
        return
    target = spin if mode == "threads" else snooze
    ts = [threading.Thread(target=target, args=(secs,), name=f"w{i}") for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


if __name__ == "__main__":
    main()
