"""circuit.tracer.gilstate: the GIL read from a live interpreter's memory.

Oracles: the target's own thread ids and hand-off count, py-spy's owns_gil,
nm's symbol table, and offsetof() compiled against CPython's headers.
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gil_offsets_probe import compilers, derive, include_dirs
from helpers import interpreter

from circuit.tracer import gilstate
from circuit.tracer.elfsyms import ET_DYN, ET_EXEC, ElfError, load_bias, read_elf
from circuit.tracer.gilstate import (
    NOT_READY,
    OFFSETS,
    REVALIDATE_EVERY,
    GilLayout,
    GilReader,
    locate,
    version_from_hex,
)
from circuit.tracer.pyimage import parse_image_name, parse_maps

HERE = Path(__file__).parent
TARGET = str(HERE / "gilstate_target.py")
MINORS = (10, 11, 12, 13)


def libpythons() -> list[str]:
    pattern = os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/lib/libpython3.1[0-9].so.1.0")
    return sorted(glob.glob(pattern))


# -- pure parts -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0", (3, 11, "", True)),
        ("/opt/lib/libpython3.12.so", (3, 12, "", True)),
        ("/usr/bin/python3.11", (3, 11, "", False)),
        ("/usr/bin/python3.13t", (3, 13, "t", False)),
        ("/x/libpython3.13t.so.1.0", (3, 13, "t", True)),
        ("/x/libpython3.12d.so.1.0 (deleted)", (3, 12, "d", True)),
        ("/usr/bin/python3.10 (deleted)", (3, 10, "", False)),
        ("/usr/bin/python3", None),
        ("/usr/bin/python3.11-config", None),
        ("/usr/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so", None),
        ("/x/libpython3.so", None),
        ("/x/python3.12.so", None),
        ("/x/libpython3.12", None),
    ],
)
def test_image_names(path: str, want: tuple[int, int, str, bool] | None) -> None:
    assert parse_image_name(path) == want


def test_version_from_hex() -> None:
    assert version_from_hex(0x030C01F0) == (3, 12)
    assert version_from_hex(0x030A0DF0) == (3, 10)
    assert version_from_hex(sys.hexversion) == sys.version_info[:2]


MAPS = """\
00400000-00421000 r--p 00000000 fe:00 26723                              /usr/bin/python3.11
00945000-00a86000 rw-p 00544000 fe:00 26723                              /usr/bin/python3.11
00a86000-00ac9000 rw-p 00000000 00:00 0
7f41b1c00000-7f41b1cf5000 r--p 00000000 fe:00 26933                      /usr/lib/lib python3.so (deleted)
7ffd1000-7ffd2000 r-xp 00000000 00:00 0                                  [vdso]
garbage line
"""


def test_parse_maps() -> None:
    rows = parse_maps(MAPS)
    assert [(r.start, r.end, r.perms, r.offset, r.inode) for r in rows[:3]] == [
        (0x400000, 0x421000, "r--p", 0, 26723),
        (0x945000, 0xA86000, "rw-p", 0x544000, 26723),
        (0xA86000, 0xAC9000, "rw-p", 0, 0),
    ]
    assert [r.path for r in rows] == [
        "/usr/bin/python3.11",
        "/usr/bin/python3.11",
        "",
        "/usr/lib/lib python3.so (deleted)",
        "[vdso]",
    ]


def _nm(path: str) -> dict[str, tuple[int, int]]:
    out = subprocess.run(
        ["nm", "-D", "-S", "--defined-only", path], capture_output=True, text=True, check=True
    )
    syms = {}
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) == 4:
            syms[f[3]] = (int(f[0], 16), int(f[1], 16))
    return syms


def test_elf_symbols_agree_with_nm() -> None:
    if not shutil.which("nm"):
        pytest.skip("nm (binutils) not installed")
    paths = [*libpythons(), *(p for p in ("/usr/bin/python3.11",) if os.path.exists(p))]
    if not paths:
        pytest.skip("no libpython or static python on this machine")
    for path in paths:
        want = _nm(path)
        names = ("_PyRuntime", "Py_Version", "PyEval_SaveThread", "Py_Initialize")
        info = read_elf(path, (*names, "no_such_symbol"))
        assert info.symbols == {n: want[n] for n in names if n in want}, path
        assert "_PyRuntime" in info.symbols
        assert info.e_type in (ET_DYN, ET_EXEC)
        # The PT_LOAD segments are what readelf lists, in file order.
        assert info.loads and info.loads[0].offset == 0


def test_elf_reader_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    text = tmp_path / "x"
    text.write_text("#!/bin/sh\n")
    with pytest.raises(ElfError):
        read_elf(str(text), ("_PyRuntime",))
    short = tmp_path / "y"
    short.write_bytes(b"\x7fELF\x02\x01")
    with pytest.raises(ElfError):
        read_elf(str(short), ("_PyRuntime",))


def test_load_bias() -> None:
    libs = libpythons()
    if not libs:
        pytest.skip("no shared libpython on this machine")
    info = read_elf(libs[0], ())
    assert info.e_type == ET_DYN and info.loads[0].vaddr == 0
    base = 0x7F41B1C00000
    rows = [(base + 0x5F000, 0x5F000), (base, 0)]
    assert load_bias(info, rows) == base
    assert load_bias(info, [(base + 0x5F000, 0x5F000)]) is None
    if os.path.exists("/usr/bin/python3.11"):
        exe = read_elf("/usr/bin/python3.11", ())
        if exe.e_type == ET_EXEC:
            assert load_bias(exe, [(exe.loads[0].vaddr, 0)]) == 0


def test_offsets_table_matches_the_headers() -> None:
    """Re-derive OFFSETS with offsetof() on each installed version's headers (x86_64 and aarch64)."""
    dirs, ccs = include_dirs(), compilers()
    if not dirs or not ccs:
        pytest.skip("no CPython internal headers or no C compiler")
    checked = 0
    for version, inc in dirs.items():
        if version not in OFFSETS:
            continue
        table = OFFSETS[version]
        for arch, cc in ccs.items():
            got = derive(inc, cc)
            assert (got["last_holder"], got["locked"], got["switch_number"]) == (
                gilstate.LAST_HOLDER_OFF,
                gilstate.LOCKED_OFF,
                gilstate.SWITCH_OFF,
            ), (version, arch)
            fields = (got["gil"], got["interp_main"], got["interp_gil_ptr"], got["threads_head"])
            assert fields == (
                table.gil,
                table.interp_main,
                table.interp_gil_ptr,
                table.threads_head,
            ), (version, arch)
            assert (got["tid"], got["tstate_next"]) == (table.tid, table.tstate_next), (
                version,
                arch,
            )
            checked += 1
    assert checked


def test_reader_cache_follows_the_holder() -> None:
    """GilReader on GIL and thread-state structs laid out in this process's own memory."""
    gil, ts, pthread = (ctypes.create_string_buffer(256) for _ in range(3))
    tid_off = OFFSETS[(3, 13)].tid

    def state(holder: int, locked: int, switch: int) -> None:
        struct.pack_into("=QQi4xQ", gil, 0, 5000, holder, locked, switch)

    def tid(v: int) -> None:
        struct.pack_into("=Q", ts, tid_off, v)

    state(ctypes.addressof(ts), 1, 7)
    tid(1111)
    layout = GilLayout((3, 13), ctypes.addressof(gil), tid_off)
    with GilReader(os.getpid(), layout) as reader:
        assert reader.read() == (1, 1111, 7)
        # The same address now belongs to another thread, and no switch was
        # counted (a thread state freed and reallocated): seen within the
        # revalidation period, not at once (the cache saves that read).
        tid(2222)
        rows = [reader.read() for _ in range(REVALIDATE_EVERY + 1)]
        assert rows[0] == (1, 1111, 7) and rows[-1] == (1, 2222, 7)
        tid(3333)
        state(ctypes.addressof(ts), 0, 8)  # a switch: re-read at once
        assert reader.read() == (0, 3333, 8)
        tid(4444)
        reader.invalidate()
        assert reader.read() == (0, 4444, 8)
        state(0, 0, 8)
        assert reader.read() == (0, 0, 8)
        state(ctypes.addressof(ts), -1, 8)  # a destroyed GIL reads as free
        assert reader.read() == (0, 4444, 8)
        state(8, 1, 9)  # a holder that cannot be read
        assert reader.read() == (1, 0, 9)
        tid(1 << 40)  # nor a thread id no kernel hands out (a freed, reused struct)
        state(ctypes.addressof(ts), 1, 10)
        assert reader.read() == (1, 0, 10)
    # 3.10: the thread state holds a pthread_t, and the tid is inside it.
    struct.pack_into("=Q", ts, 176, ctypes.addressof(pthread))
    struct.pack_into("=I", pthread, 20, 5555)
    state(ctypes.addressof(ts), 1, 3)
    layout = GilLayout((3, 10), ctypes.addressof(gil), 176, pthread_tid_offset=20)
    with GilReader(os.getpid(), layout) as reader:
        assert reader.read() == (1, 5555, 3)


# -- live targets ---------------------------------------------------------


class Target:
    def __init__(self, proc: subprocess.Popen[str], tids: list[int]) -> None:
        self.proc, self.tids = proc, tids

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextmanager
def target(exe: str, mode: str, secs: float = 60) -> Iterator[Target]:
    proc = subprocess.Popen([exe, TARGET, mode, str(secs)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        tids = []
        for line in proc.stdout:
            if line.startswith("tid "):
                tids.append(int(line.split()[1]))
            elif line.strip() == "ready":
                break
        else:
            raise RuntimeError("target did not get ready")
        yield Target(proc, tids)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def located(pid: int, timeout: float = 10.0) -> GilLayout:
    end = time.monotonic() + timeout
    while True:
        layout = locate(pid)
        if not isinstance(layout, str):
            return layout
        if not layout.startswith(NOT_READY) or time.monotonic() > end:
            pytest.fail(f"locate({pid}): {layout}")
        time.sleep(0.01)


def sample(reader: GilReader, n: int = 1000, every: float = 0.001) -> list[tuple[int, int, int]]:
    out = []
    for _ in range(n):
        r = reader.read()
        assert r is not None
        out.append(r)
        time.sleep(every)
    return out


def _runtime_addr(pid: int, image: str) -> int:
    maps = [m for m in parse_maps(Path(f"/proc/{pid}/maps").read_text()) if m.path == image]
    info = read_elf(image, ("_PyRuntime",))
    bias = load_bias(info, ((m.start, m.offset) for m in maps))
    assert bias is not None
    return bias + info.symbols["_PyRuntime"][0]


@pytest.mark.integration
@pytest.mark.parametrize("minor", MINORS)
def test_a_spinning_thread_holds_the_gil(minor: int) -> None:
    exe = interpreter(minor)
    with target(exe, "spin") as t:
        layout = located(t.pid)
        assert layout.version == (3, minor)
        with GilReader(t.pid, layout) as reader:
            rows = sample(reader)
        runtime = _runtime_addr(t.pid, layout.image)
    (spinner,) = t.tids
    held = sum(1 for locked, holder, _ in rows if locked and holder == spinner)
    assert held / len(rows) >= 0.9, rows[:5]
    # The main interpreter's GIL: _PyRuntime.ceval.gil (3.10/3.11) or
    # _PyRuntime._main_interpreter._gil (3.12+), as the headers lay it out.
    inc = include_dirs().get((3, minor))
    if inc is not None and shutil.which("gcc"):
        off = derive(inc, "gcc")
        want = off["gil"] if minor < 12 else off["main_interp"] + off["interp_gil"]
        assert layout.gil_addr == runtime + want


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("minor", MINORS)
def test_hashing_threads_leave_the_gil_free(minor: int) -> None:
    exe = interpreter(minor)
    with target(exe, "hash") as t:
        layout = located(t.pid)
        time.sleep(0.3)  # past the buffers' allocation
        with GilReader(t.pid, layout) as reader:
            rows = sample(reader)
    locked = sum(r[0] for r in rows) / len(rows)
    # Measured 0.1-0.6% on 2 cores; a hashing thread preempted between two
    # hashes keeps the GIL while it waits for a CPU, so a loaded machine reads more.
    assert locked <= 0.10, locked
    # Whoever took it last is one of the hashing threads (or the main one).
    holders = {r[1] for r in rows[len(rows) // 2 :]}
    assert holders <= {*t.tids, t.pid}, (holders, t.tids, t.pid)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("minor", MINORS)
def test_switch_count_agrees_with_the_targets_own_hand_offs(minor: int) -> None:
    exe = interpreter(minor)
    with target(exe, "switch", secs=3) as t:
        layout = located(t.pid)
        with GilReader(t.pid, layout) as reader:
            time.sleep(0.3)
            first, t0 = reader.read(), time.monotonic()
            time.sleep(2)
            last, t1 = reader.read(), time.monotonic()
        assert t.proc.stdout is not None
        stamps = json.loads(t.proc.stdout.readline())
    assert first is not None and last is not None
    ours = last[2] - first[2]
    theirs = sum(1 for s in stamps if t0 <= s <= t1)
    assert theirs >= 40  # 2 threads, 5 ms interval: ~100-200 hand-offs/s
    # Each hand-off is one switch_number step; a hand-off racing a read at
    # either end of the window may be stamped on the other side of it.
    assert abs(ours - theirs) <= 2, (ours, theirs)


def _pyspy_dump(pid: int) -> list[dict]:
    pyspy = Path(sys.executable).with_name("py-spy")
    exe = str(pyspy) if pyspy.exists() else shutil.which("py-spy")
    if not exe:
        pytest.skip("py-spy not installed")
    for _ in range(3):  # py-spy sometimes misses the version of a process it just met
        r = subprocess.run(
            [exe, "dump", "--pid", str(pid), "--json"], capture_output=True, text=True, timeout=30
        )
        if r.returncode == 0:
            return json.loads(r.stdout)
        time.sleep(0.2)
    pytest.fail(f"py-spy dump failed: {r.stderr[-500:]}")


@pytest.mark.integration
@pytest.mark.parametrize("minor", MINORS)
def test_holder_agrees_with_py_spy(minor: int) -> None:
    exe = interpreter(minor)
    for mode in ("spin", "idle"):
        with target(exe, mode) as t:
            layout = located(t.pid)
            time.sleep(0.3)  # the main thread prints "ready", then goes to join()
            with GilReader(t.pid, layout) as reader:
                for _ in range(3):
                    before = reader.read()
                    dump = _pyspy_dump(t.pid)
                    after = reader.read()
                    assert before is not None and after is not None
                    owners = [th["os_thread_id"] for th in dump if th["owns_gil"]]
                    ours = [r[1] for r in (before, after) if r[0]]
                    if mode == "spin":
                        assert owners == t.tids and ours == t.tids * 2, (owners, before, after)
                    else:
                        assert owners == [] and ours == [], (owners, before, after)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("minor", "field", "delta", "why"),
    [
        (12, "tid", -8, "thread states do not name the threads"),
        (11, "tid", 8, "thread states do not name the threads"),
        (11, "gil", 8, "unexpected GIL state"),
        (12, "interp_gil_ptr", 8, "cannot read the interpreter state"),
    ],
)
def test_a_wrong_layout_is_refused(
    monkeypatch, minor: int, field: str, delta: int, why: str
) -> None:
    exe = interpreter(minor)
    with target(exe, "spin") as t:
        located(t.pid)
        right = OFFSETS[(3, minor)]
        wrong = dataclasses.replace(right, **{field: getattr(right, field) + delta})
        monkeypatch.setitem(OFFSETS, (3, minor), wrong)
        reason = locate(t.pid)
    assert isinstance(reason, str) and why in reason, reason


@pytest.mark.integration
def test_static_python_executable() -> None:
    exe = "/usr/bin/python3.11"
    if not os.path.exists(exe) or read_elf(exe, ()).e_type != ET_EXEC:
        pytest.skip("no static (non-PIE) /usr/bin/python3.11 here")
    with target(exe, "spin") as t:
        layout = located(t.pid)
        assert layout.image == exe and layout.version == (3, 11)
        with GilReader(t.pid, layout) as reader:
            rows = sample(reader, n=200)
    assert sum(1 for r in rows if r[0] and r[1] == t.tids[0]) / len(rows) >= 0.9


@pytest.mark.integration
def test_reasons_instead_of_exceptions() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        reason = locate(sleeper.pid)
        while isinstance(reason, str) and reason.startswith(NOT_READY):  # not exec'd yet
            time.sleep(0.01)
            reason = locate(sleeper.pid)
        assert isinstance(reason, str) and "not a Python process" in reason
    finally:
        sleeper.kill()
        sleeper.wait()
    assert locate(sleeper.pid) == f"process {sleeper.pid} has exited"
    # Older interpreters: 3.9 has _PyRuntime, 2.7 and 3.6 have none.
    for version in ("3.9", "3.6", "2.7"):
        old = sorted(
            glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}"))
        )
        if not old:
            continue
        src = "import sys, time; sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(30)"
        proc = subprocess.Popen([old[0], "-c", src], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            assert locate(proc.pid) == f"CPython {version} not supported"
        finally:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_read_after_the_target_exits_is_none() -> None:
    exe = interpreter(sys.version_info[1]) if sys.version_info[:2] in OFFSETS else interpreter(12)
    with target(exe, "idle") as t:
        layout = located(t.pid)
        reader = GilReader(t.pid, layout)
        assert reader.read() is not None
    try:
        assert reader.read() is None
    finally:
        reader.close()
    assert reader.fd == -1
