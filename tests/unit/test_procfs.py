"""Unit tests of the /proc parsers and the wait classifier on canned text."""

from __future__ import annotations

import pytest

from circuit.tracer import procfs
from circuit.tracer.waits import Classifier

STAT_TAIL = (
    b"S 1 7 7 0 -1 4194560 500 0 0 0 12 34 0 0 20 0 3 0 4242 1000000 321 "
    b"18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
)


@pytest.mark.parametrize(
    "comm",
    [b"python3", b"with space", b") S 1 (", b"a)b(c)", b"((", b"nl\nx", b"\xff\xfebad", b"x" * 15],
)
def test_parse_stat_hostile_names(comm):
    st = procfs.parse_stat(b"77 (" + comm + b") " + STAT_TAIL)
    assert st.comm == comm.decode("utf-8", "backslashreplace")
    assert (st.state, st.ppid, st.utime, st.stime) == ("S", 1, 12, 34)
    assert (st.num_threads, st.starttime, st.rss_pages, st.processor) == (3, 4242, 321, 1)


def test_parse_schedstat_syscall_wchan():
    assert procfs.parse_schedstat(b"123456 789 42\n") == (123456, 789, 42)
    assert procfs.parse_syscall(b"running\n") == (-1, 0)
    assert procfs.parse_syscall(b"-1 0x7ffc 0x7f00\n") == (-1, 0)
    nr, arg0 = procfs.parse_syscall(
        b"202 0x7f1234567890 0x80 0x0 0x0 0x0 0x0 0x7ffc526aca80 0x7f734321b503\n"
    )
    assert (nr, arg0) == (202, 0x7F1234567890)
    # a huge unsigned argument still fits an int64 column
    assert procfs.parse_syscall(b"0 0xffffffffffffffff 0 0 0 0 0 0 0\n")[1] == -1
    assert procfs.parse_wchan(b"0") == ""
    assert procfs.parse_wchan(b"hrtimer_nanosleep") == "hrtimer_nanosleep"


def test_parse_ctx_switches():
    status = (
        b"Name:\tvoluntary_ctxt\nState:\tS (sleeping)\n"
        b"voluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t7\n"
    )
    assert procfs.parse_ctx_switches(status) == (150, 7)
    assert procfs.parse_ctx_switches(status.rstrip(b"\n")) == (150, 7)
    assert procfs.parse_ctx_switches(b"Name:\tx\n") == (0, 0)


def test_parse_io_and_statm():
    io = b"rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\n"
    assert procfs.parse_io(io) == (10, 20, 4096, 8192)
    assert procfs.parse_statm_rss(b"1000 250 100 1 0 300 0\n", 4096) == 250 * 4096
    assert procfs.parse_loadavg_last_pid(b"0.04 0.06 0.02 2/79 3251\n") == 3251


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("socket:[123]", "socket"),
        ("pipe:[9]", "pipe"),
        ("anon_inode:[eventpoll]", "epoll"),
        ("anon_inode:[eventfd]", "eventfd"),
        ("anon_inode:[timerfd]", "timerfd"),
        ("anon_inode:[signalfd]", "signalfd"),
        ("anon_inode:inotify", "inotify"),
        ("anon_inode:[pidfd]", "other"),
        ("/dev/null", "device"),
        ("/dev/pts/3", "device"),
        ("/dev/shm/x", "file"),
        ("/tmp/a b (deleted)", "file"),
        ("net:[4026531840]", "other"),
    ],
)
def test_fd_kind(target, kind):
    assert procfs.fd_kind(target) == kind


def test_link_inode():
    assert procfs.link_inode("socket:[123]") == 123
    assert procfs.link_inode("/path") == -1
    assert procfs.link_inode("socket:[x]") == -1


def test_parse_net_tables():
    tcp = (
        b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        b"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1\n"
        b"   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 6666 1\n"
    )
    t = procfs.parse_net_inet(tcp, "tcp", False)
    assert t[5555] == ("tcp LISTEN", "127.0.0.1:8080", "")
    assert t[6666] == ("tcp ESTABLISHED", "127.0.0.1:8080", "127.0.0.1:50000")
    tcp6 = (
        b"  sl  local_address                         remote_address\n"
        b"   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 "
        b"0A 00000000:00000000 00:00000000 00000000     0        0 7777 1\n"
    )
    assert procfs.parse_net_inet(tcp6, "tcp", True)[7777][1] == "[::1]:80"
    unix = (
        b"Num       RefCount Protocol Flags    Type St Inode Path\n"
        b"0000000000000000: 00000002 00000000 00010000 0001 01 8888 /run/my sock\n"
        b"0000000000000000: 00000003 00000000 00000000 0001 03 9999\n"
        b"0000000000000000: 00000003 00000000 00000000 0001 01 1111 @abstract\n"
        b"0000000000000000: 00000002 00000000 00000000 0002 01 2222\n"
    )
    u = procfs.parse_net_unix(unix)
    assert u[8888] == ("unix stream LISTEN", "/run/my sock", "")
    assert u[9999] == ("unix stream ESTABLISHED", "", "")
    assert u[1111] == ("unix stream CLOSE", "@abstract", "")
    assert u[2222] == ("unix dgram", "", "")


X86 = Classifier("x86_64")


@pytest.mark.parametrize(
    ("state", "nr", "fdk", "wchan", "want"),
    [
        ("R", -1, None, "", "running"),
        ("D", 0, "file", "", "disk"),
        ("S", 230, None, "hrtimer_nanosleep", "sleep"),
        ("S", 35, None, "", "sleep"),
        ("S", 202, None, "futex_wait_queue", "lock"),
        ("S", 232, None, "ep_poll", "poll"),
        ("S", 281, None, "", "poll"),
        ("S", 7, None, "", "poll"),
        ("S", 45, None, "", "socket"),
        ("S", 43, None, "", "socket"),
        ("S", 0, "socket", "", "socket"),
        ("S", 0, "pipe", "", "pipe"),
        ("S", 1, "pipe", "", "pipe"),
        ("S", 0, None, "anon_pipe_read", "pipe"),
        ("S", 0, "device", "n_tty_read", "other"),
        ("S", 61, None, "", "child"),
        ("S", -1, None, "do_wait", "child"),
        ("S", 9999, None, "", "other"),
        ("T", -1, None, "", "other"),
        ("Z", -1, None, "", "other"),
    ],
)
def test_classifier(state, nr, fdk, wchan, want):
    assert X86(state, nr, 3, wchan, fdk) == want


def test_generic_table_differs():
    arm = Classifier("aarch64")
    assert arm("S", 98, 0, "", None) == "lock"  # futex on arm64
    assert arm("S", 115, 0, "", None) == "sleep"
    assert arm.syscall_name(98) == "futex"
    assert X86.syscall_name(202) == "futex"
    assert X86.syscall_name(-1) == ""


@pytest.mark.parametrize(
    ("nr", "arg0", "want"),
    [
        (270, 0, "sleep"),  # pselect6(0, NULL, NULL, NULL, t): Python 3.10's time.sleep
        (23, 0, "sleep"),  # select(0, ...)
        (7, 0, "sleep"),  # poll(NULL, 0, t)
        (271, 0, "sleep"),  # ppoll(NULL, 0, t, ...)
        (270, 6, "poll"),  # pselect6 on fds 0-5: a select-based loop
        (23, 1, "poll"),  # select on fd 0 alone: nfds is 1
        (7, 0x7FFC0000, "poll"),  # poll on an fd array
        (271, 0x7FFC0000, "poll"),
        (232, 0, "poll"),  # epoll_wait on epoll fd 0 (stdin closed): still an event loop
        (281, 0, "poll"),
        (441, 0, "poll"),
        (230, 1, "sleep"),  # clock_nanosleep(CLOCK_MONOTONIC, ...): 3.11 and later
    ],
)
def test_multiplexers_on_no_fds_are_sleep(nr: int, arg0: int, want: str) -> None:
    # arg0 is the first syscall argument: nfds of select, the fd array of poll.
    assert X86("S", nr, arg0, "poll_schedule_timeout", None) == want
    assert X86("R", nr, arg0, "", None) == "running"


def test_multiplexers_on_no_fds_are_sleep_on_arm64() -> None:
    arm = Classifier("aarch64")
    assert arm("S", 72, 0, "", None) == "sleep"  # pselect6(0, ...)
    assert arm("S", 73, 0, "", None) == "sleep"  # ppoll(NULL, ...)
    assert arm("S", 72, 4, "", None) == "poll"
    assert arm("S", 22, 0, "", None) == "poll"  # epoll_pwait on fd 0
