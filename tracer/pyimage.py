"""Where a running CPython's ``_PyRuntime`` is: its image file and address.

The image is libpython (shared builds; a python executable linked to it only
refers to the symbol) or the python executable itself (static builds, such as
Debian's /usr/bin/python3.11, or an application embedding Python).  Its
address is the load address of that file, from /proc/PID/maps, plus the
symbol's value in the file's .dynsym / .symtab.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from circuit.tracer.elfsyms import ElfError, load_bias, read_elf

# Reasons that start with this are transient: locate again a little later.
NOT_READY = "interpreter not initialised yet"


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str


@dataclass(frozen=True)
class RuntimeImage:
    path: str  # as /proc/PID/maps names it
    runtime: int  # address of _PyRuntime in the target
    version_addr: int | None  # address of Py_Version (3.11+), if exported
    machine: int  # ELF e_machine
    name: tuple[int, int, str, bool] | None  # parse_image_name(path)


def parse_maps(text: str) -> list[Mapping]:
    """The rows of /proc/PID/maps (lines that do not parse are skipped)."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, _, hi = parts[0].partition("-")
        try:
            start, end, off, inode = int(lo, 16), int(hi, 16), int(parts[2], 16), int(parts[4])
        except ValueError:
            continue
        path = parts[5].strip() if len(parts) == 6 else ""
        out.append(Mapping(start, end, parts[1], off, inode, path))
    return out


_IMAGE_NAME = re.compile(r"^(lib)?python(\d+)\.(\d+)([a-z]*)(\.so(\.[0-9.]*)?)?$")


def parse_image_name(path: str) -> tuple[int, int, str, bool] | None:
    """``.../libpython3.12.so.1.0`` -> (3, 12, "", True); ``python3.13t`` -> (3, 13, "t", False).

    (major, minor, ABI flags, is a shared library); None if the file name is
    not a CPython executable or libpython.
    """
    name = path.removesuffix(" (deleted)").rsplit("/", 1)[-1]
    m = _IMAGE_NAME.match(name)
    if m is None or bool(m.group(1)) != bool(m.group(5)):
        return None
    return int(m.group(2)), int(m.group(3)), m.group(4), bool(m.group(1))


def _image_file(pid: int, m: Mapping) -> str | None:
    """A path that opens the mapped file itself (checked by inode): the
    target may live in another mount namespace, or its file may have been
    replaced on disk since it started."""
    path = m.path.removesuffix(" (deleted)")
    for p in (f"/proc/{pid}/map_files/{m.start:x}-{m.end:x}", f"/proc/{pid}/root{path}", path):
        try:
            if os.stat(p).st_ino == m.inode:
                return p
        except OSError:
            continue
    return None


def find_runtime(pid: int) -> RuntimeImage | str:
    """``pid``'s _PyRuntime, or the reason it cannot be found (never raises).

    The answer is about this moment: a process that has not mapped libpython
    yet (just forked, or an application that embeds Python later) may become
    one; reasons starting with NOT_READY say so for the usual start-up case.
    """
    try:
        with open(f"/proc/{pid}/maps") as f:
            maps = parse_maps(f.read())
    except FileNotFoundError:
        return f"process {pid} has exited"
    except PermissionError:
        return f"no permission to read the memory map of process {pid}"
    except OSError as e:
        return f"cannot read /proc/{pid}/maps: {e.strerror}"
    if not maps:
        return f"process {pid} has exited"
    by_path: dict[str, list[Mapping]] = {}
    for m in maps:
        if m.path.startswith("/"):
            by_path.setdefault(m.path, []).append(m)
    if not by_path:
        # Between fork and exec (or a kernel thread): no file mapped at all.
        return f"{NOT_READY} (no file mapped yet)"
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    named = {p: n for p in by_path if (n := parse_image_name(p))}
    # libpython first; then the executable, whatever its name.
    order = sorted(named, key=lambda p: not named[p][3])
    order += [p for p in by_path if p.removesuffix(" (deleted)") == exe and p not in named]
    for path in order:
        rows = by_path[path]
        file = _image_file(pid, rows[0])
        if file is None:
            continue
        try:
            info = read_elf(file, ("_PyRuntime", "Py_Version"))
        except (OSError, ElfError):
            continue
        bias = load_bias(info, ((m.start, m.offset) for m in rows))
        if "_PyRuntime" not in info.symbols or bias is None:
            continue
        ver = info.symbols.get("Py_Version")
        return RuntimeImage(
            path=path,
            runtime=bias + info.symbols["_PyRuntime"][0],
            version_addr=bias + ver[0] if ver else None,
            machine=info.machine,
            name=named.get(path),
        )
    old = sorted(n[:2] for n in named.values() if n[:2] < (3, 7))
    if old:
        return f"CPython {old[0][0]}.{old[0][1]} not supported"
    if named:
        # A python executable whose libpython the loader has not mapped yet
        # (right after exec).
        return f"{NOT_READY} (no _PyRuntime in {', '.join(sorted(named))})"
    return "not a Python process (no libpython or python executable with _PyRuntime mapped)"
