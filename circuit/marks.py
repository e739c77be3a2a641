"""``circuit.mark(name)``: a named event from inside a traced program.

The tracer puts the run folder in ``CIRCUIT_RUN_DIR``; a mark appends one JSON
line to ``marks.jsonl`` there, stamped with the same monotonic clock the
sampler uses.  Outside a trace it costs one dictionary lookup and does nothing,
so workloads and user code can call it unconditionally.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

ENV_RUN_DIR = "CIRCUIT_RUN_DIR"
MARKS_FILE = "marks.jsonl"

_fd: int | None = None
_fd_dir: str | None = None
_lock = threading.Lock()


def mark(name: str, /, **fields: Any) -> None:
    """Record a named instant (e.g. ``task-start``) in the current run, if any.

    Extra keyword fields (numbers, short strings) are stored with the mark,
    ``name`` among them: ``mark("phase", name="load")`` is a ``phase`` mark
    naming the phase ``load`` (``Run.marks``: ``name`` "phase",
    ``field_name`` "load"; the Perfetto export shows "phase: load").
    """
    run_dir = os.environ.get(ENV_RUN_DIR)
    if not run_dir:
        return
    rec = {
        "t_ns": time.monotonic_ns(),
        "pid": os.getpid(),
        "tid": threading.get_native_id(),
        "name": str(name),
    }
    if fields:
        rec["fields"] = fields
    line = (json.dumps(rec, default=str) + "\n").encode()
    global _fd, _fd_dir
    with _lock:
        if _fd is None or _fd_dir != run_dir:
            try:
                _fd = os.open(
                    os.path.join(run_dir, MARKS_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
                )
            except OSError:
                return  # never break the traced program over a mark
            _fd_dir = run_dir
        try:
            # One write() of one line with O_APPEND: lines from many threads and
            # processes never interleave.
            os.write(_fd, line)
        except OSError:
            pass
