"""A target that measures what dies between samples: ``python exits_target.py MODE N OUT``.

``children N``: starts N children that each burn ~CHILD_CPU_S of CPU and
exit, reaps them all at once, and prints ``os.times()``'s children figure
(user + system, the kernel's own sum of what it credited to this parent).

``threads N``: runs N threads of ~THREAD_CPU_S of CPU each, WAVE at a time.
Just before it exits each thread reads its own context switches
(``/proc/thread-self/status``) and schedstat; the JSON lists every thread's
native id with those readings and its ``time.thread_time_ns()``.

It then sleeps LINGER_S, so a sampler sees the process after the last
exits (what it saw of them at exit is then the question, not whether it
looked again).  Output: one JSON object in the file OUT.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

CHILD_CPU_S = 0.04
THREAD_CPU_S = 0.002
WAVE = 20
LINGER_S = 0.3


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def children(n: int) -> dict:
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            burn(CHILD_CPU_S)
            os._exit(0)
        pids.append(pid)
    time.sleep(0.2)  # all exited by now, none reaped: they die between samples
    for pid in pids:
        os.waitpid(pid, 0)
    t = os.times()
    return {"children_cpu_s": t.children_user + t.children_system, "pids": pids}


def _self_reading() -> dict:
    with open("/proc/thread-self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open("/proc/thread-self/schedstat") as f:
        cpu_ns, delay_ns, _ = (int(x) for x in f.read().split())
    return {
        "tid": threading.get_native_id(),
        "ctx_vol": int(status["voluntary_ctxt_switches"]),
        "ctx_invol": int(status["nonvoluntary_ctxt_switches"]),
        "sched_cpu_ns": cpu_ns,
        "sched_delay_ns": delay_ns,
        "thread_time_ns": time.thread_time_ns(),
    }


def threads(n: int) -> dict:
    out: list[dict] = []

    def work() -> None:
        burn(THREAD_CPU_S)
        out.append(_self_reading())  # list.append is atomic under the GIL

    for start in range(0, n, WAVE):
        wave = [threading.Thread(target=work) for _ in range(min(WAVE, n - start))]
        for t in wave:
            t.start()
        for t in wave:
            t.join()
    return {"threads": out}


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    time.sleep(0.1)  # let the sampler find us first
    result = children(n) if mode == "children" else threads(n)
    result["pid"] = os.getpid()
    time.sleep(LINGER_S)
    with open(sys.argv[3], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
