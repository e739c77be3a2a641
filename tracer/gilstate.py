"""Read a running CPython's GIL state from outside, without stopping it.

``locate(pid)`` finds the interpreter's GIL struct in the target's memory:
the ``_PyRuntime`` symbol of libpython (or of a static python executable),
plus the image's load address from /proc/PID/maps, plus per-version offsets.
``GilReader.read()`` then costs one ``pread`` of /proc/PID/mem per sample
(two when the holder changed): ``(locked, holder's native thread id,
switch_number)``.

CPython 3.10-3.13 with the default GIL on x86_64 and aarch64 Linux (aarch64
from the same offsets, derived with a cross compiler but not yet run on
aarch64 hardware).  The offsets below come from tests/support/gil_offsets_probe.py
(offsetof() against each version's internal headers); 3.13 also
describes itself (``_Py_DebugOffsets`` at the start of ``_PyRuntime``) and
those are used when present.  Every located layout is checked against the
live process (GIL fields in range, thread states naming the target's own
threads) so an unknown patch-level layout is refused rather than misread.

The GIL struct (``struct _gil_runtime_state``) starts the same in 3.10-3.13:
``unsigned long interval; PyThreadState *last_holder; int locked;
unsigned long switch_number``.  ``take_gil`` sets locked=1 and, when the
taker is not the last holder, last_holder=tstate and ++switch_number;
``drop_gil`` sets locked=0 and may re-set last_holder without counting.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from dataclasses import dataclass

from circuit.tracer.elfsyms import EM_AARCH64, EM_X86_64
from circuit.tracer.pyimage import NOT_READY, RuntimeImage, find_runtime

LAST_HOLDER_OFF = 8
LOCKED_OFF = 16
SWITCH_OFF = 24
GIL_READ_SIZE = 32
# A cached holder -> thread id is re-read after this many reads even if the
# pointer and switch_number are unchanged: a thread state freed on thread exit
# can be reallocated at the same address for a new thread, and a thread taking
# the GIL with the last holder's address does not count a switch.
REVALIDATE_EVERY = 64
SUPPORTED = ((3, 10), (3, 11), (3, 12), (3, 13))

_GIL = struct.Struct("=QQi4xQ")
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")
_MAX_TID = 1 << 22  # PID_MAX_LIMIT on 64-bit Linux
_MAX_THREADS_WALKED = 4096


@dataclass(frozen=True)
class _Offsets:
    gil: int  # 3.10/3.11: of _PyRuntime.ceval.gil in _PyRuntime; else 0
    interp_main: int  # of _PyRuntime.interpreters.main
    interp_gil_ptr: int  # 3.12+: of PyInterpreterState.ceval.gil (a pointer)
    threads_head: int  # of PyInterpreterState.threads.head (3.10: tstate_head)
    tstate_next: int
    tid: int  # of PyThreadState.native_thread_id (3.10: thread_id, a pthread_t)


# Identical on x86_64 and aarch64 (the pthread types whose sizes differ lie
# after these fields).  Checked by tests/unit/test_gilstate.py where headers exist.
OFFSETS: dict[tuple[int, int], _Offsets] = {
    # version:        gil, interp_main, interp_gil_ptr, threads_head, tstate_next, tid
    (3, 10): _Offsets(352, 40, 0, 8, 8, 176),
    (3, 11): _Offsets(360, 48, 0, 16, 8, 160),
    (3, 12): _Offsets(0, 48, 384, 72, 8, 144),
    (3, 13): _Offsets(0, 640, 16, 7344, 8, 160),
}


@dataclass(frozen=True)
class GilLayout:
    """Where one process's GIL is.  Reading it (what GilReader does):

    ``locked``, ``last_holder``, ``switch_number`` = the int at gil_addr +
    LOCKED_OFF, the pointer at + LAST_HOLDER_OFF, the unsigned long at +
    SWITCH_OFF; holder tid = the unsigned long at last_holder + tid_offset,
    or on 3.10 the int at (the pointer at last_holder + tid_offset) +
    pthread_tid_offset.  Only the main interpreter's GIL: 3.12+
    subinterpreters created with a GIL of their own are not seen.
    """

    version: tuple[int, int]
    gil_addr: int  # absolute address of the GIL struct in the target
    tid_offset: int  # offset of native_thread_id in PyThreadState (3.10: of thread_id)
    # 3.10 has no native_thread_id: thread_id is a pthread_t (the address of
    # glibc's struct pthread), whose kernel tid (an int) is at this offset.
    pthread_tid_offset: int | None = None
    image: str = ""  # the file that holds _PyRuntime


def version_from_hex(hexversion: int) -> tuple[int, int]:
    """PY_VERSION_HEX (``Py_Version``, ``sys.hexversion``) -> (major, minor)."""
    return hexversion >> 24 & 0xFF, hexversion >> 16 & 0xFF


# -- reading the target ---------------------------------------------------


class _Unreadable(Exception):
    pass


class _Mem:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, addr: int, size: int) -> bytes:
        try:
            data = os.pread(self.fd, size, addr)
        except (OSError, OverflowError) as e:
            raise _Unreadable(f"{addr:#x}") from e
        if len(data) != size:
            raise _Unreadable(f"{addr:#x}")
        return data

    def u64(self, addr: int) -> int:
        return _U64.unpack(self.read(addr, 8))[0]


def _debug_offsets(mem: _Mem, runtime: int) -> tuple[_Offsets, int, bool] | str:
    """3.13's self-description at the start of _PyRuntime: (offsets, version hex, free-threaded)."""
    raw = mem.read(runtime, 208)
    if raw[:8] != b"xdebugpy":
        return "no _Py_DebugOffsets in _PyRuntime (unrecognised 3.13 build)"
    f = struct.unpack_from("=26Q", raw, 0)
    hexver, free = f[1], f[2]
    interpreters_head, threads_head, ceval_gil = f[5], f[9], f[14]
    gil_struct, locked, holder = f[15], f[17], f[18]
    tstate_next, native_tid = f[21], f[25]
    if locked - gil_struct != LOCKED_OFF or holder - gil_struct != LAST_HOLDER_OFF:
        return "unexpected GIL struct layout in _Py_DebugOffsets"
    # _PyRuntime.interpreters is {mutex, head, main, ...}: main follows head.
    offs = _Offsets(
        gil=0,
        interp_main=interpreters_head + 8,
        interp_gil_ptr=ceval_gil,
        threads_head=threads_head,
        tstate_next=tstate_next,
        tid=native_tid,
    )
    return offs, hexver, bool(free)


def _pthread_tid_candidates() -> list[int]:
    """Offsets of the kernel tid in this process's glibc ``struct pthread``.

    The target runs on the same machine, so almost surely the same libc; each
    candidate is checked against the target's own thread ids before use.
    """
    libc = ctypes.CDLL(None)
    libc.pthread_self.restype = ctypes.c_void_p
    me = libc.pthread_self()
    if not me:
        return []
    blob = ctypes.string_at(me, 1024)
    tid = _U32.pack(threading.get_native_id())
    return [off for off in range(0, len(blob) - 3, 4) if blob[off : off + 4] == tid]


def _resolve_tid(mem: _Mem, tstate: int, tid_offset: int, pthread_off: int | None) -> int:
    v = mem.u64(tstate + tid_offset)
    if pthread_off is not None:
        v = _U32.unpack(mem.read(v + pthread_off, 4))[0] if v else 0
    return v if 0 < v < _MAX_TID else 0


def _tstates(mem: _Mem, interp: int, offs: _Offsets) -> list[int]:
    out: list[int] = []
    seen: set[int] = set()
    ts = mem.u64(interp + offs.threads_head)
    while ts and len(out) < _MAX_THREADS_WALKED and ts not in seen:
        out.append(ts)
        seen.add(ts)
        ts = mem.u64(ts + offs.tstate_next)
    return out


def _tids_match(tids: list[int], live: set[int]) -> bool:
    hits = sum(t in live for t in tids)
    return hits >= 1 and 2 * hits >= len(tids)


def locate(pid: int) -> GilLayout | str:
    """The layout of ``pid``'s main-interpreter GIL, or the reason it cannot be read.

    Reasons beginning with NOT_READY are transient (right after exec, during
    start-up): call again later.  Never raises for a target that is gone, not
    Python, unsupported or unreadable.
    """
    found = find_runtime(pid)
    if isinstance(found, str):
        return found
    if found.machine not in (EM_X86_64, EM_AARCH64):
        return f"unsupported architecture (ELF machine {found.machine})"
    if found.name and "t" in found.name[2]:
        return "free-threaded build (no GIL)"
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"process {pid} has exited"
    except PermissionError:
        return f"no permission to read memory of process {pid} (ptrace access denied)"
    except OSError as e:
        return f"cannot open /proc/{pid}/mem: {e.strerror}"
    mem = _Mem(fd)
    try:
        return _locate(pid, mem, found)
    except _Unreadable as e:
        if not os.path.exists(f"/proc/{pid}"):
            return f"process {pid} has exited"
        return f"cannot read the interpreter state of process {pid} at {e}"
    finally:
        os.close(fd)


def _locate(pid: int, mem: _Mem, found: RuntimeImage) -> GilLayout | str:
    image, runtime, named = found.path, found.runtime, found.name
    version = named[:2] if named else None
    version_addr = found.version_addr
    if version_addr is not None:
        from_symbol = version_from_hex(mem.u64(version_addr))
        if version is not None and from_symbol != version:
            return f"version mismatch: {image} says {version}, Py_Version says {from_symbol}"
        version = from_symbol
    if version is None:
        return f"unknown CPython version ({image})"
    label = f"CPython {version[0]}.{version[1]}"
    if version not in SUPPORTED:
        return f"{label} not supported"
    if named and "d" in named[2] and version < (3, 13):
        return f"{label} debug build not supported"
    offs = OFFSETS[version]
    if version >= (3, 13):
        dbg = _debug_offsets(mem, runtime)
        if isinstance(dbg, str):
            return dbg
        offs, hexver, free_threaded = dbg
        if free_threaded:
            return "free-threaded build (no GIL)"
        if version_from_hex(hexver) != version:
            return f"version mismatch: {label} image, _Py_DebugOffsets says {hexver:#x}"
    interp = mem.u64(runtime + offs.interp_main)
    if not interp:
        return NOT_READY
    if offs.gil:
        gil = runtime + offs.gil
    else:
        gil = mem.u64(interp + offs.interp_gil_ptr)
        if not gil:
            return NOT_READY
    interval, _holder, locked, _switch = _GIL.unpack(mem.read(gil, GIL_READ_SIZE))
    if locked == -1 or interval == 0:
        return NOT_READY
    if locked not in (0, 1) or not 0 < interval <= 10**9:
        return f"unexpected GIL state for {label} (interval {interval}, locked {locked}): unrecognised layout"
    try:
        live = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
    except OSError:
        return f"process {pid} has exited"
    tstates = _tstates(mem, interp, offs)
    if not tstates:
        return NOT_READY
    pthread_off: int | None = None
    if version == (3, 10):
        for cand in _pthread_tid_candidates():
            tids = [_safe_tid(mem, ts, offs.tid, cand) for ts in tstates]
            if _tids_match(tids, live):
                pthread_off = cand
                break
        else:
            return f"{label}: cannot map pthread ids to thread ids (not glibc, or another PID namespace)"
    tids = [_safe_tid(mem, ts, offs.tid, pthread_off) for ts in tstates]
    if not _tids_match(tids, live):
        return f"{label}: thread states do not name the threads of process {pid} (unrecognised layout, or another PID namespace)"
    return GilLayout(version, gil, offs.tid, pthread_off, image)


def _safe_tid(mem: _Mem, tstate: int, tid_offset: int, pthread_off: int | None) -> int:
    try:
        return _resolve_tid(mem, tstate, tid_offset, pthread_off)
    except _Unreadable:
        return 0


class GilReader:
    """Samples one process's GIL: ``read()`` -> (locked, holder tid, switch_number)."""

    def __init__(self, pid: int, layout: GilLayout) -> None:
        """Opens /proc/PID/mem read-only; raises OSError if it cannot."""
        self.pid = pid
        self.layout = layout
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        self._mem = _Mem(self.fd)
        self._gil = layout.gil_addr
        self._holder = 0
        self._switch = -1
        self._tid = 0
        self._left = 0

    def read(self) -> tuple[int, int, int] | None:
        """(locked 0/1, last holder's native tid or 0, switch_number); None if unreadable.

        The holder is the last thread to have taken the GIL whether or not it
        still holds it: pair it with ``locked``.  A holder whose thread state
        cannot be read (freed as its thread exited) reads as 0.
        """
        try:
            data = os.pread(self.fd, GIL_READ_SIZE, self._gil)
        except OSError:
            return None
        if len(data) != GIL_READ_SIZE:
            return None
        _interval, holder, locked, switch = _GIL.unpack(data)
        if holder == 0:
            tid = 0
        elif holder == self._holder and switch == self._switch and self._left > 0:
            tid = self._tid
            self._left -= 1
        else:
            try:
                tid = _resolve_tid(
                    self._mem, holder, self.layout.tid_offset, self.layout.pthread_tid_offset
                )
            except _Unreadable:
                tid = 0
            self._holder, self._switch, self._tid = holder, switch, tid
            self._left = REVALIDATE_EVERY if tid else 0
        return (1 if locked == 1 else 0), tid, switch

    def invalidate(self) -> None:
        """Forget the cached holder (e.g. when the target's thread set changed)."""
        self._left = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> GilReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
