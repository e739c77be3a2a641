"""Why a thread is not running: kernel state + syscall + wait channel -> one word.

The vocabulary is public (it is a column in the run format and a key in
``circuit summary --json``):

    running  on a CPU (state R; see runnable)
    runnable queued for a CPU: not in the run folder's ``wait`` column, which
             cannot tell it from ``running``; the analysis splits it out of
             each sample with schedstat's run delay (analysis/runnable.py)
    sleep    nanosleep / clock_nanosleep / pause, or select / poll on no fds at
             all (Python 3.10's time.sleep is pselect6(0, NULL, NULL, NULL, t))
    lock     futex (a lock, a condition variable; ``gil`` is split out later)
    poll     epoll_wait / poll / select and friends
    socket   blocked in a read/write/accept/connect on a socket
    pipe     blocked reading or writing a pipe
    disk     uninterruptible sleep (D): block I/O, page faults on files
    child    waiting for a child process (wait4 / waitid)
    other    anything else; the raw syscall and wchan are kept beside it
"""

from __future__ import annotations

import platform

WAIT_REASONS = (
    "running",
    "runnable",
    "sleep",
    "lock",
    "gil",
    "poll",
    "socket",
    "pipe",
    "disk",
    "child",
    "other",
)

# name -> number, per architecture.  Only syscalls a blocked thread is likely
# to sit in; the rest fall through to the wait channel.
_X86_64 = {
    "read": 0,
    "write": 1,
    "poll": 7,
    "pread64": 17,
    "pwrite64": 18,
    "readv": 19,
    "writev": 20,
    "select": 23,
    "sched_yield": 24,
    "pause": 34,
    "nanosleep": 35,
    "sendfile": 40,
    "connect": 42,
    "accept": 43,
    "sendto": 44,
    "recvfrom": 45,
    "sendmsg": 46,
    "recvmsg": 47,
    "wait4": 61,
    "flock": 73,
    "fsync": 74,
    "fdatasync": 75,
    "rt_sigtimedwait": 128,
    "rt_sigsuspend": 130,
    "futex": 202,
    "io_getevents": 208,
    "clock_nanosleep": 230,
    "epoll_wait": 232,
    "waitid": 247,
    "openat": 257,
    "pselect6": 270,
    "ppoll": 271,
    "splice": 275,
    "epoll_pwait": 281,
    "accept4": 288,
    "recvmmsg": 299,
    "sendmmsg": 307,
    "io_uring_enter": 426,
    "epoll_pwait2": 441,
    "futex_waitv": 449,
}

# The generic table used by arm64 and riscv64.
_GENERIC = {
    "io_getevents": 4,
    "epoll_pwait": 22,
    "flock": 32,
    "read": 63,
    "write": 64,
    "readv": 65,
    "writev": 66,
    "pread64": 67,
    "pwrite64": 68,
    "sendfile": 71,
    "pselect6": 72,
    "ppoll": 73,
    "splice": 76,
    "fsync": 82,
    "fdatasync": 83,
    "waitid": 95,
    "futex": 98,
    "nanosleep": 101,
    "clock_nanosleep": 115,
    "sched_yield": 124,
    "rt_sigsuspend": 133,
    "rt_sigtimedwait": 137,
    "accept": 202,
    "connect": 203,
    "sendto": 206,
    "recvfrom": 207,
    "sendmsg": 211,
    "recvmsg": 212,
    "accept4": 242,
    "recvmmsg": 243,
    "wait4": 260,
    "sendmmsg": 269,
    "io_uring_enter": 426,
    "epoll_pwait2": 441,
    "futex_waitv": 449,
}


def syscall_table(machine: str | None = None) -> dict[str, int]:
    machine = machine or platform.machine()
    return _X86_64 if machine in ("x86_64", "amd64", "AMD64") else _GENERIC


_GROUPS = {
    "sleep": ("nanosleep", "clock_nanosleep", "pause", "rt_sigsuspend", "rt_sigtimedwait"),
    "lock": ("futex", "futex_waitv", "flock"),
    "poll": ("poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait", "epoll_pwait2"),
    "socket": (
        *("accept", "accept4", "connect", "sendto", "recvfrom", "sendmsg", "recvmsg"),
        *("recvmmsg", "sendmmsg"),
    ),
    "child": ("wait4", "waitid"),
    "disk": ("fsync", "fdatasync", "io_getevents"),
}
# Multiplexers called on no fds are timers: select(0, ...) and pselect6(0, ...)
# (the first argument is nfds; Python 3.10's time.sleep), poll(NULL, 0, ...) and
# ppoll(NULL, ...) (the first argument is the fd array; NULL can only go with
# nfds 0, anything else fails at once with EFAULT).  epoll_wait's first
# argument is an epoll fd, which may be 0: never a timer by its argument.
_NO_FDS_SLEEP = ("select", "pselect6", "poll", "ppoll")
# read/write-like calls: the answer depends on what fd 0 (the first argument) is.
_FD_IO = ("read", "write", "readv", "writev", "pread64", "pwrite64", "splice", "sendfile")

# Wait channels (kernel function names) as a fallback when the syscall says
# nothing useful, e.g. for kernels that hide /proc/TID/syscall.
_WCHAN_HINTS = (
    ("nanosleep", "sleep"),
    ("futex", "lock"),
    ("ep_poll", "poll"),
    ("do_sys_poll", "poll"),
    ("do_select", "poll"),
    ("poll_schedule", "poll"),
    ("pipe_", "pipe"),
    ("sk_wait", "socket"),
    ("inet_csk_accept", "socket"),
    ("unix_stream", "socket"),
    ("sock", "socket"),
    ("tcp_", "socket"),
    ("do_wait", "child"),
    ("wait_woken", "other"),
)


class Classifier:
    """Turns (state, syscall nr, arg0, wchan) into a wait reason.

    ``arg0`` is the syscall's first argument: the fd of read/write-like calls,
    nfds of select, the fd array of poll.

    ``fd_kind`` resolves the first argument of read/write-like syscalls to the
    kind of fd it names (``socket``, ``pipe``, ``file``...), when known.
    """

    def __init__(self, machine: str | None = None) -> None:
        table = syscall_table(machine)
        self.names = {nr: name for name, nr in table.items()}
        self.by_nr: dict[int, str] = {}
        for reason, names in _GROUPS.items():
            for n in names:
                if n in table:  # the generic table has no pause, poll, select...
                    self.by_nr[table[n]] = reason
        self.fd_io = {table[n] for n in _FD_IO if n in table}
        self.no_fds_sleep = {table[n] for n in _NO_FDS_SLEEP if n in table}

    def __call__(self, state: str, nr: int, arg0: int, wchan: str, fd_kind: str | None) -> str:
        if state == "R":
            return "running"
        if state == "D":
            return "disk"
        if state not in ("S", "I"):
            return "other"  # stopped, traced, zombie, dead
        if arg0 == 0 and nr in self.no_fds_sleep:
            return "sleep"
        reason = self.by_nr.get(nr)
        if reason is not None:
            return reason
        if nr in self.fd_io:
            if fd_kind in ("socket", "pipe"):
                return fd_kind
            if fd_kind == "file":
                return "disk"
            # fd not known (yet): the wait channel may still say pipe or socket.
        if wchan:
            for hint, r in _WCHAN_HINTS:
                if hint in wchan:
                    return r
        return "other"

    def syscall_name(self, nr: int) -> str:
        if nr < 0:
            return ""
        return self.names.get(nr, f"syscall_{nr}")
