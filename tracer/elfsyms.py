"""Defined symbols and load segments of a 64-bit little-endian ELF file.

Just enough ELF to find ``_PyRuntime`` in libpython or a python executable:
the file header, the PT_LOAD program headers, and the .dynsym / .symtab
symbol tables.  A small reader rather than pyelftools because this runs once
per traced process: pyelftools costs ~0.1 s to import and another ~0.1 s to
look one name up in libpython's table; this reads only the tables it needs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

ET_EXEC, ET_DYN = 2, 3
EM_X86_64, EM_AARCH64 = 62, 183
_PT_LOAD = 1
_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_SHN_UNDEF = 0

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
# A symbol table bigger than this is not a real one (a corrupt header).
_MAX_TABLE = 256 << 20


class ElfError(ValueError):
    """Not an ELF file this reader understands (or a truncated one)."""


@dataclass(frozen=True)
class Segment:
    vaddr: int
    offset: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class ElfInfo:
    e_type: int  # ET_EXEC (fixed addresses) or ET_DYN (shared object / PIE)
    machine: int  # EM_X86_64, EM_AARCH64, ...
    loads: tuple[Segment, ...]
    symbols: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (value, size)


def _read(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise ElfError(f"truncated at {offset:#x}+{size}")
    return data


def read_elf(path: str, names: Iterable[str]) -> ElfInfo:
    """The load segments of ``path`` and the *defined* symbols among ``names``.

    .dynsym is searched first, then .symtab (a stripped binary has only the
    former; a static one exports ``_PyRuntime`` there).  Raises OSError if the
    file cannot be read and ElfError if it is not a 64-bit little-endian ELF.
    """
    wanted = {n.encode() for n in names}
    with open(path, "rb") as f:
        ehdr = _EHDR.unpack(_read(f, 0, _EHDR.size))
        ident = ehdr[0]
        if ident[:4] != b"\x7fELF":
            raise ElfError("not an ELF file")
        if ident[4] != 2 or ident[5] != 1:
            raise ElfError("not a 64-bit little-endian ELF file")
        e_type, machine = ehdr[1], ehdr[2]
        phoff, shoff = ehdr[5], ehdr[6]
        phentsize, phnum, shentsize, shnum = ehdr[9], ehdr[10], ehdr[11], ehdr[12]
        loads = []
        if phnum and phentsize >= _PHDR.size:
            table = _read(f, phoff, phentsize * phnum)
            for i in range(phnum):
                p = _PHDR.unpack_from(table, i * phentsize)
                if p[0] == _PT_LOAD:
                    loads.append(Segment(vaddr=p[3], offset=p[2], filesz=p[5], memsz=p[6]))
        symbols: dict[str, tuple[int, int]] = {}
        if shnum and shentsize >= _SHDR.size and wanted:
            table = _read(f, shoff, shentsize * shnum)
            sections = [_SHDR.unpack_from(table, i * shentsize) for i in range(shnum)]
            for kind in (_SHT_DYNSYM, _SHT_SYMTAB):
                for sh in sections:
                    if sh[1] == kind and len(symbols) < len(wanted):
                        _scan(f, sh, sections, wanted, symbols)
    return ElfInfo(e_type=e_type, machine=machine, loads=tuple(loads), symbols=symbols)


def _scan(
    f: BinaryIO,
    sh: tuple[int, ...],
    sections: list[tuple[int, ...]],
    wanted: set[bytes],
    out: dict[str, tuple[int, int]],
) -> None:
    offset, size, link, entsize = sh[4], sh[5], sh[6], sh[9]
    if not (0 <= link < len(sections)) or entsize < _SYM.size or size > _MAX_TABLE:
        return
    strsh = sections[link]
    if strsh[5] > _MAX_TABLE:
        return
    syms = _read(f, offset, size)
    strtab = _read(f, strsh[4], strsh[5])
    for i in range(size // entsize):
        st_name, _info, _other, shndx, value, sz = _SYM.unpack_from(syms, i * entsize)
        if shndx == _SHN_UNDEF or not st_name:
            continue
        end = strtab.find(b"\0", st_name)
        name = strtab[st_name:end] if end >= 0 else b""
        if name in wanted:
            key = name.decode()
            if key not in out:
                out[key] = (value, sz)


def load_bias(info: ElfInfo, mappings: Iterable[tuple[int, int]], page: int = 4096) -> int | None:
    """Where the image was loaded: add this to a symbol's value for its address.

    ``mappings`` are (start address, file offset) of the image's file-backed
    mappings in /proc/PID/maps.  The first PT_LOAD segment is mapped from its
    page-aligned file offset at its page-aligned address plus the bias (0 for
    an ET_EXEC image).  None if that mapping is not there.
    """
    if not info.loads:
        return None
    first = min(info.loads, key=lambda s: s.vaddr)
    want_off = first.offset - first.offset % page
    for start, off in mappings:
        if off == want_off:
            return start - (first.vaddr - first.vaddr % page)
    return None
