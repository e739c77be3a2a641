"""A crawler that churns sockets: many short HTTP connections on loopback.

``python churn_target.py serve``: a ThreadingHTTPServer on 127.0.0.1 (an
ephemeral port); prints the port, serves small pages until stdin closes.

``python churn_target.py crawl PORT [--pages 1200] [--threads 8] [--out F]
[--wait]``: a ThreadPoolExecutor of ``--threads`` threads fetches ``--pages``
pages with ``requests.get`` (a new connection each: no Session), prints
``ready`` first (with ``--wait``, then waits for one line on stdin, so a
tracer can attach before the work starts), and writes to ``--out`` its own
measure of the work: wall time, CPU time (os.times, self and threads), pages
fetched, connections per second.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"<html><body>" + b"x" * 512 + b"</body></html>\n"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve() -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    srv.daemon_threads = True
    srv.request_queue_size = 256
    print(srv.server_address[1], flush=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    sys.stdin.read()
    srv.shutdown()


def crawl(port: int, pages: int, threads: int, out: str | None, wait: bool) -> None:
    import requests

    url = f"http://127.0.0.1:{port}/page"
    print("ready", flush=True)
    if wait:
        sys.stdin.readline()

    def fetch(i: int) -> int:
        r = requests.get(f"{url}{i}", timeout=30)
        return len(r.content)

    t0, c0 = time.monotonic(), os.times()
    with ThreadPoolExecutor(threads) as pool:
        got = sum(1 for n in pool.map(fetch, range(pages)) if n == len(BODY))
    wall, c1 = time.monotonic() - t0, os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    result = {
        "pages": got,
        "work_wall_s": wall,
        "work_cpu_s": cpu,
        "conns_per_s": got / wall if wall > 0 else 0.0,
    }
    if out:
        with open(out, "w") as f:
            json.dump(result, f)
    print(json.dumps(result), flush=True)


def main() -> None:
    if sys.argv[1] == "serve":
        serve()
        return
    args = sys.argv[2:]
    port = int(args[0])

    def opt(name: str, default: str) -> str:
        return args[args.index(name) + 1] if name in args else default

    crawl(
        port,
        int(opt("--pages", "1200")),
        int(opt("--threads", "8")),
        opt("--out", "") or None,
        "--wait" in args,
    )


if __name__ == "__main__":
    main()
