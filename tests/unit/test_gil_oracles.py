"""The GIL oracles' parsers (benchmarks/oracles.py), on recorded text and on
this very interpreter: a wrong parser would make tests/integration/test_gil_truth.py
compare circuit with noise."""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

import pytest

from benchmarks.oracles import (
    HeldShare,
    RuntimeRange,
    by_native_tid,
    futex_waits,
    raw_counts,
    runtime_range,
    split_futex_time,
    thread_lives,
    thread_truths,
)

# perf script -F pid,tid,time,event,trace --ns, trimmed from a real recording
SCRIPT = """\
 7081/7083    408.000000000: syscalls:sys_enter_futex: uaddr: 0x7f6bd3656200, op: 0x00000089, val: 0x00000000, utime: 0x7fff69b19000, uaddr2: 0x00000000, val3: 0xffffffff
 7081/7084    408.000100000: syscalls:sys_enter_futex: uaddr: 0x5576b46fdee0, op: 0x00000189, val: 0x00000000, utime: 0x00000000, uaddr2: 0x00000000, val3: 0xffffffff
 7081/7082    408.001000000: syscalls:sys_enter_futex: uaddr: 0x7f6bd3656200, op: 0x00000081, val: 0x00000001, utime: 0x00000000, uaddr2: 0x00000000, val3: 0x00000000
 7081/7082    408.001001000:       sched:sched_wakeup: comm=python3.12 pid=7083 prio=120 target_cpu=001
 7081/7082    408.001002000:  syscalls:sys_exit_futex: 0x1
 7081/7083    408.004000000:  syscalls:sys_exit_futex: 0x0
 7081/7085    408.005000000:  syscalls:sys_exit_futex: 0x0
 7081/7084    408.010000000:       sched:sched_wakeup: comm=python3.12 pid=7084 prio=120 target_cpu=000
 7081/7084    408.010000000:  syscalls:sys_exit_futex: 0xffffffffffffff92
 7081/7087    408.100000000: syscalls:sys_enter_futex: uaddr: 0x7f6bd3700000, op: 0x00000080, val: 0x00000000, utime: 0x00000000, uaddr2: 0x00000000, val3: 0x00000000
 7081/7087    408.300000000:  syscalls:sys_exit_futex: 0x0
 7081/7081    407.900000000:        task:task_newtask: pid=7083 comm=python3.12 clone_flags=3d0f00 oom_score_adj=0
 7081/7083    408.400000000: sched:sched_process_exit: comm=python3.12 pid=7083 prio=120 group_dead=false
 7081/7084    408.500000000: sched:sched_process_exit: comm=python3.12 pid=7084 prio=120 group_dead=false
 7081/7086    408.020000000: syscalls:sys_enter_futex: uaddr: 0x7f6bd3656204, op: 0x00000080, val: 0x00000000, utime: 0x00000000, uaddr2: 0x00000000, val3: 0x00000000
"""


def test_futex_waits_pair_entry_wakeup_and_exit() -> None:
    waits = {w.tid: w for w in futex_waits(SCRIPT)}
    # 7082 woke someone (FUTEX_WAKE: not a wait); 7085 exits a call entered
    # before the recording; 7086 is still inside its wait when it ends
    assert sorted(waits) == [7083, 7084, 7087]
    gil = waits[7083]
    assert (gil.pid, gil.uaddr, gil.op) == (7081, 0x7F6BD3656200, 0x89)
    assert gil.blocked_s == pytest.approx(0.001001)  # entry to the wake-up
    assert gil.syscall_s == pytest.approx(0.004)  # entry to exit: also the run-queue wait
    lock = waits[7084]  # WAIT_BITSET | PRIVATE | CLOCK_REALTIME, timed out
    assert lock.ret == -110 and lock.blocked_s == pytest.approx(0.0099)


def test_thread_lives_from_creation_to_exit() -> None:
    # 7084 was created before the recording: no life
    assert thread_lives(SCRIPT) == {7083: pytest.approx(0.5)}


def test_split_futex_time_by_the_runtime_range() -> None:
    rng = RuntimeRange("libpython", 0x7F6BD3643340, 0x7F6BD36B37E8)
    split = split_futex_time(futex_waits(SCRIPT), {7081: rng})
    assert split.gil == {7083: pytest.approx(0.001001)}
    assert split.gil_syscall == {7083: pytest.approx(0.004)}
    # a heap lock below the range, a mapping above it
    assert split.other == {7084: pytest.approx(0.0099), 7087: pytest.approx(0.2)}
    assert list(split.gil_offsets) == [0x7F6BD3656200 - rng.lo]
    assert split_futex_time(futex_waits(SCRIPT), {1: rng}).gil == {}  # other processes


def test_runtime_range_finds_this_interpreters_pyruntime() -> None:
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed: the oracle cannot read ELF symbols")
    maps = Path(f"/proc/{os.getpid()}/maps").read_text()
    rng = runtime_range(maps)
    assert rng is not None
    where = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
    assert rng.lo == where
    assert 0x100 < rng.hi - rng.lo < 1 << 24


def test_runtime_range_needs_an_interpreter() -> None:
    assert runtime_range("7f00-7f01 r--p 00000000 fe:00 1 /usr/lib/libc.so.6\n") is None


RAW = """\
thread (7311): Thread-3 (w);Thread._bootstrap (threading.py:1030);w (t1.py:6) 139
thread (7311);Thread._bootstrap (threading.py:1030);w (t1.py:6) 11
thread (7307): MainThread 2
thread (0x7FA3431B36C0): ThreadPoolExecutor-0_3;_bootstrap (threading.py:973) 38
thread (0x7FA3431B36C0) 4
process 12: not a thread line 5
"""


def test_raw_counts_with_and_without_names() -> None:
    assert raw_counts(RAW) == {
        7311: ("Thread-3 (w)", 150),
        7307: ("MainThread", 2),
        0x7FA3431B36C0: ("ThreadPoolExecutor-0_3", 42),
    }


def _report() -> dict:
    def snap(t: float, cpu: int, delay: int, vol: int, inv: int) -> dict:
        return {
            "t": t,
            "thread_time": cpu / 1e9,
            "cpu_ns": cpu,
            "run_delay_ns": delay,
            "slices": 1,
            "voluntary_ctxt_switches": vol,
            "nonvoluntary_ctxt_switches": inv,
        }

    return {
        "pid": 10,
        "threads": [
            {
                "tid": 11,
                "name": "ThreadPoolExecutor-0_0",
                "role": "count",
                "ops": 5,
                "start": snap(100.0, 10**9, 0, 1, 1),
                "end": snap(103.0, 2 * 10**9, 5 * 10**8, 101, 21),
            }
        ],
    }


def test_thread_truths_off_cpu_is_life_minus_cpu_minus_run_delay() -> None:
    (t,) = thread_truths(_report()).values()
    assert (t.lifetime_s, t.cpu_s, t.run_delay_s) == (3.0, 1.0, 0.5)
    assert t.off_cpu_s == pytest.approx(1.5)
    assert (t.voluntary, t.involuntary) == (100, 20)


def test_py_spy_threads_matched_by_tid_or_name() -> None:
    threads = thread_truths(_report())
    held = {
        0x7F00: HeldShare("ThreadPoolExecutor-0_0", 50, 200),  # 3.10: a pthread id
        0x7F01: HeldShare("MainThread", 0, 200),
        11: HeldShare("x", 1, 2),
    }
    out = by_native_tid({0x7F00: held[0x7F00], 0x7F01: held[0x7F01]}, threads, pid=10)
    assert out == {11: held[0x7F00], 10: held[0x7F01]}
    assert out[11].share == 0.25
    assert by_native_tid({11: held[11]}, threads, pid=10) == {11: held[11]}
