"""An asyncio service whose coroutine load_config() makes a blocking call.

MODE sleep: time.sleep + a file read (blocks the loop, no I/O wait);
MODE socket: a blocking HTTP GET to a slow local server (the loop thread
waits on one socket). Meanwhile the loop serves echo clients."""

import asyncio
import os
import sys
import tempfile
import time
import urllib.request

mode, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CONFIG = os.path.join(tempfile.mkdtemp(), "config.ini")
with open(CONFIG, "w") as f:
    f.write("[service]\nworkers = 4\n" * 100)


async def load_config():
    if mode == "sleep":
        time.sleep(0.3)  # the blocking call: the loop stops
        with open(CONFIG) as f:
            return f.read()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30) as r:
        return r.read()


async def handle(reader, writer):
    while data := await reader.read(100):
        writer.write(data)
        await writer.drain()
    writer.close()


async def client(srv_port):
    r, w = await asyncio.open_connection("127.0.0.1", srv_port)
    for _ in range(20):
        w.write(b"ping")
        await w.drain()
        await r.read(100)
        await asyncio.sleep(0.05)
    w.close()


async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    srv_port = srv.sockets[0].getsockname()[1]
    clients = [asyncio.create_task(client(srv_port)) for _ in range(3)]
    for _ in range(rounds):
        await load_config()
        await asyncio.sleep(0.1)
    await asyncio.gather(*clients)
    srv.close()


asyncio.run(main())
