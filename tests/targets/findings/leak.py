"""Leaks files in leak_files() and sockets in leak_sockets(), a few at a time."""

import os
import socket
import sys
import tempfile
import time

port, files, sockets = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
folder = tempfile.mkdtemp()
kept = []  # references: nothing is closed by the garbage collector


def leak_files(n):
    for i in range(n):
        kept.append(open(os.path.join(folder, f"log-{i}.txt"), "w"))  # noqa: SIM115 (the leak)
        time.sleep(0.01)


def leak_sockets(n):
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        kept.append(s)
        time.sleep(0.01)


leak_files(files)
leak_sockets(sockets)
time.sleep(0.3)
