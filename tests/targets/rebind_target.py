"""Opens a TCP listener, closes it and binds its port again, over and over.

For ``SECONDS`` (argv[1]): bind 127.0.0.1 (no SO_REUSEADDR), listen, close,
and bind the same port again at once in the next round.  A close releases
a listener's port only when the last reference to the socket goes: if
something else holds a copy of the fd, the next bind fails with EADDRINUSE
until that copy is closed.  Such a bind is retried (50 us apart) for at
most ``BOUND`` seconds (argv[2]).  Prints one JSON line: rounds, how many
binds found the port in use, the longest wait for it, close errors, and
the rounds that gave up.  Then waits for stdin to close.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import time


def main() -> None:
    seconds, bound = float(sys.argv[1]), float(sys.argv[2])
    port = 0
    rounds = in_use = close_errors = gave_up = 0
    longest = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = socket.socket()
        t0 = time.monotonic()
        while True:
            try:
                s.bind(("127.0.0.1", port))
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                in_use += 1
                if time.monotonic() - t0 > bound:
                    gave_up += 1
                    s.close()
                    s = socket.socket()
                    port = 0  # another port, and carry on counting
                    continue
                time.sleep(50e-6)
        longest = max(longest, time.monotonic() - t0)
        s.listen()
        port = s.getsockname()[1]
        rounds += 1
        try:
            s.close()
        except OSError:
            close_errors += 1
    print(
        json.dumps(
            {
                "rounds": rounds,
                "in_use": in_use,
                "longest_wait_s": longest,
                "close_errors": close_errors,
                "gave_up": gave_up,
            }
        ),
        flush=True,
    )
    sys.stdin.read()


if __name__ == "__main__":
    main()
