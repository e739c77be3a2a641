"""Threads with names of their own, for the thread-name tests.

argv: ORACLE_JSON SECONDS [LONG_NAME].  Starts worker-0 and worker-1 (and a
thread called LONG_NAME when given), each alternating a little CPU with a
short sleep for SECONDS, marks the phase with circuit.mark("phase",
name=...), and writes the oracle: {native thread id: Python name} as each
thread itself reports it (threading.get_native_id(), its own name).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import circuit

out, seconds = sys.argv[1], float(sys.argv[2])
names = ["worker-0", "worker-1", *sys.argv[3:4]]
seen: dict[int, str] = {threading.get_native_id(): threading.current_thread().name}
lock = threading.Lock()
stop = time.monotonic() + seconds


def work() -> None:
    me = threading.current_thread()
    with lock:
        seen[threading.get_native_id()] = me.name
    while time.monotonic() < stop:
        t = time.monotonic() + 0.01
        while time.monotonic() < t:
            pass
        time.sleep(0.02)


circuit.mark("phase", name="work")
threads = [threading.Thread(target=work, name=n) for n in names]
for t in threads:
    t.start()
for t in threads:
    t.join()
circuit.mark("phase", name="done")
with open(out, "w") as f:
    json.dump({str(k): v for k, v in seen.items()}, f)
