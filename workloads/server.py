"""The io-http server: aiohttp on loopback, answering ``/?delay=S`` after S seconds.

It sleeps with ``await asyncio.sleep`` so one slow request never holds up
another: the server is never the bottleneck, the client's model is.

Run by the io-http harness as its child process (so it is part of the traced
tree, with its own PID, threads and fds):
``python -m circuit.workloads.server [--port 0] [--latency S]``.  It prints the
port it listens on, then serves until its stdin closes (the harness closes it,
or dies) or it gets SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys


async def serve(host: str, port: int, latency: float) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        try:
            delay = float(request.query.get("delay", latency))
        except ValueError:
            raise web.HTTPBadRequest(text="delay must be a number of seconds") from None
        await asyncio.sleep(max(delay, 0.0))
        return web.Response(text=f"waited {delay:g} s\n")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(bound, flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stdin() -> None:
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, on_stdin)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m circuit.workloads.server", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    p.add_argument("--latency", type=float, default=0.0, help="default delay, seconds")
    a = p.parse_args(argv)
    try:
        asyncio.run(serve(a.host, a.port, a.latency))
    except OSError as e:
        print(f"circuit.workloads.server: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
