"""The /proc fast path and the psutil base give the same numbers."""

from __future__ import annotations

import subprocess
import time

import pytest

from circuit.tracer.backends import ProcBackend, PsutilBackend
from tests.support.helpers import Spawned

pytestmark = pytest.mark.integration

TARGET = """
import os, socket, threading, time
ev = threading.Event()
ts = [threading.Thread(target=ev.wait) for _ in range(4)]
[t.start() for t in ts]
socks = [socket.socket() for _ in range(2)]
for s in socks:  # bound and listening, so they are in /proc/net/tcp (psutil's view)
    s.bind(("127.0.0.1", 0)); s.listen()
f = open(os.devnull)
g = open(__import__("sys").executable, "rb")
print("ready", flush=True)
time.sleep(60)
"""


def _sample(backend):
    def go(pid):
        h = backend.open(pid)
        try:
            prow, rows, _ = backend.sample(h, {})
            fds = backend.fds(h, {})
        finally:
            backend.close(h)
        return prow, {r[1]: r for r in rows}, fds

    return go


def test_backends_agree_on_a_live_process():
    io = {"stdin": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    with Spawned(TARGET, **io) as child:
        time.sleep(0.3)  # let the main thread get from print() into sleep()
        proc_p, proc_t, proc_fds = _sample(ProcBackend())(child.pid)
        ps_p, ps_t, ps_fds = _sample(PsutilBackend())(child.pid)

    # processes: pid, ppid, threads, RSS, CPU, io
    assert proc_p[:3] == ps_p[:3]
    assert abs(proc_p[3] - ps_p[3]) <= 0.05 * proc_p[3]  # RSS
    tick = 10_000_000
    assert abs(proc_p[4] - ps_p[4]) <= tick and abs(proc_p[5] - ps_p[5]) <= tick
    assert proc_p[6:] == ps_p[6:] or abs(proc_p[6] - ps_p[6]) < 4096

    # threads: the same set, names, states, CPU and context switches (idle threads
    # do not move between the two reads)
    assert set(proc_t) == set(ps_t)
    assert len(proc_t) == 5
    for tid, r in proc_t.items():
        q = ps_t[tid]
        assert r[2] == q[2]  # name
        assert r[3] == q[3] == "S"  # state
        assert abs(r[8] - q[8]) <= tick and abs(r[9] - q[9]) <= tick  # user, system
        assert r[12:14] == q[12:14]  # voluntary, involuntary switches
        assert r[14] == q[14]  # last CPU
    # /proc knows more: why each thread sleeps
    assert {r[4] for tid, r in proc_t.items() if tid != child.pid} == {"lock"}

    # fds: the same total; psutil names files and sockets, /proc names everything
    assert len(proc_fds) == len(ps_fds)

    def count(fds, kind):
        from circuit.tracer.procfs import fd_kind

        return sum(fd_kind(t) == kind for t in fds.values())

    assert count(proc_fds, "socket") == count(ps_fds, "socket") == 2
    assert count(proc_fds, "file") == count(ps_fds, "file")
