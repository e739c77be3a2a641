"""Derive the GIL offsets of circuit.tracer.gilstate from CPython's own headers.

Compiles a tiny C file against a version's internal headers (Py_BUILD_CORE)
to assembly and reads back its offsetof() values: nothing is run, so a cross
compiler (aarch64-linux-gnu-gcc) derives another architecture's offsets.  The
installed pyconfig.h is the host's; every type it sizes is the same on the
LP64 targets compared here.

``python tests/support/gil_offsets_probe.py`` prints the table for every interpreter
and compiler found; tests/unit/test_gilstate.py checks it against gilstate.OFFSETS.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FIELDS = (
    "gil",  # 3.10/3.11: _PyRuntime.ceval.gil
    "main_interp",  # 3.12+: _PyRuntime._main_interpreter
    "interp_gil_ptr",  # 3.12+: PyInterpreterState.ceval.gil (pointer)
    "interp_gil",  # 3.12+: PyInterpreterState._gil (the struct)
    "interp_main",
    "threads_head",
    "tid",
    "tstate_next",
    "last_holder",
    "locked",
    "switch_number",
    "sizeof_gil",
)

PROBE_C = r"""
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_gil.h"
const unsigned long probe_offsets[] = {
#if PY_MINOR_VERSION >= 12
    0,
    offsetof(_PyRuntimeState, _main_interpreter),
    offsetof(PyInterpreterState, ceval.gil),
    offsetof(PyInterpreterState, _gil),
#else
    offsetof(_PyRuntimeState, ceval.gil), 0, 0, 0,
#endif
    offsetof(_PyRuntimeState, interpreters.main),
#if PY_MINOR_VERSION >= 11
    offsetof(PyInterpreterState, threads.head),
    offsetof(PyThreadState, native_thread_id),
#else
    offsetof(PyInterpreterState, tstate_head),
    offsetof(PyThreadState, thread_id),
#endif
    offsetof(PyThreadState, next),
    offsetof(struct _gil_runtime_state, last_holder),
    offsetof(struct _gil_runtime_state, locked),
    offsetof(struct _gil_runtime_state, switch_number),
    sizeof(struct _gil_runtime_state),
};
"""

_VALUE = re.compile(r"^\s*\.(?:quad|xword|8byte)\s+(\d+)\s*$", re.M)


def include_dirs() -> dict[tuple[int, int], Path]:
    """(3, minor) -> include/python3.X of every pyenv interpreter that ships internal headers."""
    out: dict[tuple[int, int], Path] = {}
    pattern = os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/include/python3.1[0-9]")
    for d in sorted(glob.glob(pattern)):
        m = re.search(r"python3\.(\d+)$", d)
        if m and Path(d, "internal", "pycore_gil.h").exists():
            out.setdefault((3, int(m.group(1))), Path(d))
    return out


def compilers() -> dict[str, str]:
    """Architecture -> C compiler, for those present."""
    found = {"x86_64": shutil.which("gcc") or shutil.which("cc")}
    found["aarch64"] = shutil.which("aarch64-linux-gnu-gcc")
    return {arch: cc for arch, cc in found.items() if cc}


def derive(include: Path, cc: str) -> dict[str, int]:
    """The FIELDS for the headers in ``include``, as ``cc`` lays them out."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text(PROBE_C)
        asm = subprocess.run(
            [cc, "-S", "-o", "-", f"-I{include}", f"-I{include / 'internal'}", str(src)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    values = [int(v) for v in _VALUE.findall(asm)]
    if len(values) != len(FIELDS):
        raise RuntimeError(f"expected {len(FIELDS)} values from {cc}, got {values}")
    return dict(zip(FIELDS, values, strict=True))


def main() -> int:
    ccs = compilers()
    for version, inc in include_dirs().items():
        for arch, cc in ccs.items():
            print(f"{version[0]}.{version[1]} {arch}: {derive(inc, cc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
