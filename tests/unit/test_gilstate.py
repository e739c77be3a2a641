"""circuit.tracer.gilstate, pure parts: image names, maps, ELF symbols, the
offsets table and the reader on structs laid out in this process's memory.

Oracles: nm's symbol table, and offsetof() compiled against CPython's headers.
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from circuit.tracer import gilstate
from circuit.tracer.elfsyms import ET_DYN, ET_EXEC, ElfError, load_bias, read_elf
from circuit.tracer.gilstate import (
    OFFSETS,
    REVALIDATE_EVERY,
    GilLayout,
    GilReader,
    version_from_hex,
)
from circuit.tracer.pyimage import parse_image_name, parse_maps
from tests.support.gil_offsets_probe import compilers, derive, include_dirs


def libpythons() -> list[str]:
    pattern = os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/lib/libpython3.1[0-9].so.1.0")
    return sorted(glob.glob(pattern))


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
