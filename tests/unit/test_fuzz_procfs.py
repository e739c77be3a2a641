"""/proc parsers against hostile names (hypothesis), and a live thread named
``) S 1 (`` traced for real.

Thread and process names are chosen by the target: any byte but NUL, so
spaces, parentheses, ``) S 1 (``, newlines and invalid UTF-8 all occur."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from circuit.tracer import procfs
from tests.support.helpers import trace

# The kernel's comm is at most 15 bytes, but /proc/PID/stat of a kernel thread
# or a future kernel may hold more: test far longer names too.
names = st.binary(min_size=0, max_size=300).filter(lambda b: b"\0" not in b)
hostile = st.sampled_from(
    [b") S 1 (", b"a) R 0 0 (b", b"((()))", b"\n", b"x\ny) Z 9 (", b"\xff\xfe", b" ", b")"]
)
name_parts = st.lists(st.one_of(names, hostile), max_size=5).map(b"".join)
u64 = st.integers(min_value=0, max_value=2**63 - 1)


def stat_line(pid: int, comm: bytes, state: bytes, f: list[int]) -> bytes:
    """A /proc/PID/stat line as the kernel prints it (52 fields)."""
    tail = [str(x).encode() for x in f]
    return b"%d (%s) %s %s\n" % (pid, comm, state, b" ".join(tail))


@settings(max_examples=300, deadline=None)
@given(
    pid=st.integers(1, 2**22),
    comm=name_parts,
    state=st.sampled_from([b"R", b"S", b"D", b"Z", b"T", b"t", b"X", b"I"]),
    f=st.lists(u64, min_size=49, max_size=49),
)
@example(pid=1, comm=b") S 1 (", state=b"R", f=list(range(49)))
@example(pid=1, comm=b"\xff" * 300, state=b"S", f=list(range(49)))
def test_parse_stat_any_name(pid, comm, state, f):
    s = procfs.parse_stat(stat_line(pid, comm, state, f))
    assert s.comm == comm.decode("utf-8", "backslashreplace")
    s.comm.encode("utf-8")  # always valid UTF-8: Parquet accepts it
    assert s.state == state.decode()
    # field numbers from proc(5): ppid 4, utime 14, stime 15, num_threads 20,
    # starttime 22, rss 24, processor 39; f[0] is field 4
    assert (s.ppid, s.utime, s.stime) == (f[0], f[10], f[11])
    assert (s.num_threads, s.starttime, s.rss_pages, s.processor) == (f[16], f[18], f[20], f[35])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600))
def test_parse_stat_garbage_raises_only_what_the_backend_catches(data):
    # ProcBackend treats ValueError/IndexError as "torn read, thread gone"
    try:
        procfs.parse_stat(data)
    except (ValueError, IndexError):
        pass


def _escape_status_name(name: bytes) -> bytes:
    # fs/proc/array.c escapes \n and \\ in the Name: line of /proc/PID/status
    return name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")


@settings(max_examples=200, deadline=None)
@given(
    name=name_parts,
    vol=st.integers(0, 2**40),
    invol=st.integers(0, 2**40),
)
def test_ctx_switches_any_name(name, vol, invol):
    status = (
        b"Name:\t%s\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1\n"
        b"voluntary_ctxt_switches:\t%d\nnonvoluntary_ctxt_switches:\t%d\n"
    ) % (_escape_status_name(name), vol, invol)
    assert procfs.parse_ctx_switches(status) == (vol, invol)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000))
def test_net_parsers_never_raise(data):
    procfs.parse_net_unix(data)
    procfs.parse_net_inet(data, "tcp", False)
    procfs.parse_net_inet(data, "udp", True)


@settings(max_examples=200, deadline=None)
@given(path=name_parts)
def test_unix_socket_path_with_spaces(path):
    line = b"0000000000000000: 00000002 00000000 00010000 0001 01 4242 " + path.replace(b"\n", b"")
    header = b"Num       RefCount Protocol Flags    Type St Inode Path\n"
    got = procfs.parse_net_unix(header + line + b"\n")
    assert 4242 in got
    assert got[4242][0] == "unix stream LISTEN"


@settings(max_examples=200, deadline=None)
@given(target=st.text(max_size=200))
def test_fd_kind_and_inode_total(target):
    assert procfs.fd_kind(target) in procfs.FD_KINDS
    assert isinstance(procfs.link_inode(target), int)


# --------------------------------------------------------------- live

RENAME = """
import ctypes, threading, time
libc = ctypes.CDLL(None)
def named(n, work):
    libc.prctl(15, n, 0, 0, 0)  # PR_SET_NAME: the kernel keeps 15 bytes
    work()
def spin():
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        pass
ts = [
    threading.Thread(target=named, args=(b") S 1 (", lambda: time.sleep(0.8))),
    threading.Thread(target=named, args=(b"R) R 0 (x\\n\\xff", spin)),
]
for t in ts:
    t.start()
for t in ts:
    t.join()
"""


@pytest.mark.integration
def test_hostile_thread_names_traced_for_real(tmp_path):
    status, run = trace(tmp_path, RENAME)
    assert status == 0
    th = run.threads
    sleeper = th[th["name"] == ") S 1 ("]
    assert len(sleeper) > 20
    # the parser took the name from the last ')': the state is the real one
    assert (sleeper["state"] == "S").mean() > 0.9
    assert (sleeper["wait"] == "sleep").mean() > 0.8
    spinner = th[th["name"] == "R) R 0 (x\n\\xff"]
    assert len(spinner) > 20
    assert (spinner["state"] == "R").mean() > 0.5
    assert spinner["tid"].nunique() == 1 and sleeper["tid"].nunique() == 1
    names = {t["name"] for t in run.summary()["threads"]}
    assert {") S 1 (", "R) R 0 (x\n\\xff"} <= names
