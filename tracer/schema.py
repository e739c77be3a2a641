"""The run folder format: table names, columns and types (see docs/format.md).

Kept free of heavy imports: the sampler uses the names, the writer maps them
to Arrow types only when it flushes.
"""

from __future__ import annotations

from circuit.marks import MARKS_FILE as MARKS_FILE  # one name, shared with the target side

from .procfs import FD_KINDS

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

META_FILE = "meta.json"

PYSPY_DIR = "pyspy"

# (column, arrow type name).  Order matters: rows are tuples in this order,
# and every table starts with t_ns.  A backend's thread row (ThreadRow,
# tracer/backends/base.py) is a `threads` row without its t_ns.
THREAD_FIELDS: tuple[tuple[str, str], ...] = (
    ("t_ns", "int64"),
    ("pid", "int32"),
    ("tid", "int32"),
    ("name", "string"),
    ("state", "string"),
    ("wait", "string"),
    ("syscall", "int16"),
    ("arg0", "int64"),
    ("wchan", "string"),
    ("user_ns", "int64"),
    ("system_ns", "int64"),
    ("cpu_ns", "int64"),
    ("run_delay_ns", "int64"),
    ("ctx_vol", "int64"),
    ("ctx_invol", "int64"),
    ("cpu", "int16"),
)

FD_KIND_COLUMNS = tuple(f"fds_{k}" for k in FD_KINDS)

# What a backend reads of a process at each sample (ProcessRow,
# tracer/backends/base.py).  A `processes` row is t_ns, these, then the
# sampler's fd counts.
PROCESS_SAMPLE_FIELDS: tuple[tuple[str, str], ...] = (
    ("pid", "int32"),
    ("ppid", "int32"),
    ("num_threads", "int32"),
    ("rss_bytes", "int64"),
    ("user_ns", "int64"),
    ("system_ns", "int64"),
    ("read_chars", "int64"),
    ("write_chars", "int64"),
    ("read_bytes", "int64"),
    ("write_bytes", "int64"),
    # What the kernel credited to this process for the children it reaped
    # (and theirs): /proc/PID/stat cutime and cstime, as os.times() reports them.
    ("children_user_ns", "int64"),
    ("children_system_ns", "int64"),
)

PROCESS_FIELDS: tuple[tuple[str, str], ...] = (
    ("t_ns", "int64"),
    *PROCESS_SAMPLE_FIELDS,
    ("fds", "int32"),
    *((c, "int32") for c in FD_KIND_COLUMNS),
)

FD_FIELDS: tuple[tuple[str, str], ...] = (
    ("t_ns", "int64"),
    ("pid", "int32"),
    ("fd", "int32"),
    ("event", "string"),  # "open" | "close"
    ("kind", "string"),
    ("target", "string"),
    ("proto", "string"),
    ("local", "string"),
    ("remote", "string"),
    ("initial", "bool_"),  # already open when the process was first seen
)

PROC_FIELDS: tuple[tuple[str, str], ...] = (
    ("t_ns", "int64"),  # first seen
    ("pid", "int32"),
    ("ppid", "int32"),
    ("name", "string"),
    ("exe", "string"),
    ("cmdline", "string"),  # shell-quoted
    ("root", "bool_"),
)

# The python executable / libpython mappings of each process (from
# /proc/PID/maps, read when the process is first seen, shortly after, and
# after an exec; a new snapshot only when they changed).  Analysis uses them
# to tell a GIL wait (futex inside the interpreter's static state) from a
# lock wait (futex on the heap): see docs/pyspy.md.
MAP_FIELDS: tuple[tuple[str, str], ...] = (
    ("t_ns", "int64"),  # when this snapshot was read
    ("pid", "int32"),
    ("start", "uint64"),
    ("end", "uint64"),
    ("path", "string"),  # the image; "<image> [bss]" for its anonymous .bss
    ("perms", "string"),  # as in /proc/PID/maps, e.g. "rw-p"
)

# The GIL as the interpreter itself records it, read from the target's
# memory (tracer/gilstate.py) at every sample of a process whose
# interpreter layout is known: one row per (process, sample).  Processes
# without rows here fall back to the futex evidence in `threads`.
GIL_FIELDS: tuple[tuple[str, str], ...] = (
    ("t_ns", "int64"),
    ("pid", "int32"),
    ("locked", "int8"),  # 1: some thread holds the GIL at t_ns
    ("holder", "int32"),  # native tid of the last holder (the holder if locked); 0: unknown
    ("switches", "int64"),  # the interpreter's cumulative count of holder changes
)

# Every task of the traced tree that exited while circuit listened, with the
# kernel's final figures (tracer/exits.py; root only): one row per thread,
# and a process's threads sum to its own totals.  t_ns is when circuit read
# the record (the exit came before, by at most one drain interval).
EXIT_FIELDS: tuple[tuple[str, str], ...] = (
    ("t_ns", "int64"),
    ("pid", "int32"),  # its process (tgid)
    ("tid", "int32"),
    ("ppid", "int32"),  # its process's parent
    ("name", "string"),
    ("user_ns", "int64"),  # tick-sampled (the kernel's raw utime), µs precision
    ("system_ns", "int64"),
    ("cpu_ns", "int64"),  # scheduler runtime, as /proc/TID/schedstat's first field
    ("run_delay_ns", "int64"),
    ("ctx_vol", "int64"),
    ("ctx_invol", "int64"),
    ("elapsed_ns", "int64"),  # from its start to its exit, µs precision
)

TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "threads": THREAD_FIELDS,
    "processes": PROCESS_FIELDS,
    "fds": FD_FIELDS,
    "procs": PROC_FIELDS,
    "maps": MAP_FIELDS,
    "gil": GIL_FIELDS,
    "exits": EXIT_FIELDS,
}

# Tables a format-1 run may lack (adding a table keeps the format version,
# docs/format.md): such a run still loads, with these tables empty.
ADDED_TABLES = frozenset({"maps", "gil", "exits"})

# Rows are sorted this way when a run is finalised: long runs of one thread
# compress to almost nothing (bytes per thread-sample is a published number).
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "threads": ("pid", "tid", "t_ns"),
    "processes": ("pid", "t_ns"),
    "fds": ("t_ns", "pid", "fd"),
    "procs": ("t_ns", "pid"),
    "maps": ("pid", "t_ns", "start"),
    "gil": ("pid", "t_ns"),
    "exits": ("pid", "tid", "t_ns"),
}


def arrow_schema(table: str):  # -> pyarrow.Schema (pyarrow is imported lazily)
    import pyarrow as pa

    return pa.schema([(c, getattr(pa, t)()) for c, t in TABLES[table]])
