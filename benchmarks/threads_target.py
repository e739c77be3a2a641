"""A target with N threads, either blocked in Event.wait or spinning.

``python threads_target.py N idle|busy [--fds F]``: starts N threads (plus the
main thread), optionally opens F extra fds (/dev/null), prints ``ready`` and
waits for stdin to close.
"""

from __future__ import annotations

import os
import resource
import sys
import threading


def main() -> None:
    n, mode = int(sys.argv[1]), sys.argv[2]
    nfds = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--fds" else 0
    if nfds:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = nfds + 256
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    threading.stack_size(256 * 1024)  # 1000 threads: keep the address space modest
    stop = threading.Event()
    # Busy threads spin only once all are started: starting thread k while k-1
    # others spin on the GIL costs ~k switch intervals (minutes for 1000).
    go = threading.Event()

    def idle() -> None:
        stop.wait()

    def busy() -> None:
        go.wait()
        i = 0
        while not stop.is_set():
            i += 1

    ts = [threading.Thread(target=busy if mode == "busy" else idle, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(nfds)]
    go.set()
    print("ready", flush=True)
    sys.stdin.read()
    stop.set()
    for fd in held:
        os.close(fd)


if __name__ == "__main__":
    main()
