"""THREADS threads fighting over one threading.Lock held in hold_lock()."""

import sys
import threading
import time

threads, seconds = int(sys.argv[1]), float(sys.argv[2])
LOCK = threading.Lock()


def hold_lock():
    with LOCK:
        time.sleep(0.05)  # the work done while holding it


def worker(stop):
    while time.monotonic() < stop:
        hold_lock()


stop = time.monotonic() + seconds
ts = [threading.Thread(target=worker, args=(stop,), name=f"worker-{i}") for i in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
