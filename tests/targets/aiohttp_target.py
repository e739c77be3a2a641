"""An aiohttp server on loopback with a healthy and a blocking handler.

    python aiohttp_target.py PORT_FILE

Binds 127.0.0.1 on a free port and writes it to PORT_FILE. ``/ok`` awaits
(asyncio.sleep(0.005)); ``/block`` calls time.sleep(0.3) inside the
handler, blocking the loop. Each /block appends its own monotonic ns
start/end to PORT_FILE.blocks (one "start end" line per call).
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp import web

BLOCKS = ""


def render_slowly() -> None:
    t = time.monotonic_ns()
    time.sleep(0.3)
    with open(BLOCKS, "a") as f:
        f.write(f"{t} {time.monotonic_ns()}\n")


async def block_handler(request: web.Request) -> web.Response:
    render_slowly()
    return web.Response(text="slow")


async def ok_handler(request: web.Request) -> web.Response:
    await asyncio.sleep(0.005)
    return web.Response(text="ok")


async def main(port_file: str) -> None:
    app = web.Application()
    app.add_routes([web.get("/ok", ok_handler), web.get("/block", block_handler)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    import os

    os.rename(port_file + ".tmp", port_file)
    await asyncio.Event().wait()


if __name__ == "__main__":
    BLOCKS = sys.argv[1] + ".blocks"
    asyncio.run(main(sys.argv[1]))
