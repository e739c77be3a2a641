"""Owner-only output files: a report or an export holds what its run folder
holds (command lines, paths, socket addresses, thread names), so it gets the
run folder's modes, whatever the umask: files 0600, folders circuit creates
0700 (docs/reliability.md).  A folder that already exists keeps its mode."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from circuit.tracer.parts import DIR_MODE, FILE_MODE


def private_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each 0700."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for p in reversed(missing):
        try:
            p.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, left as it is
        os.chmod(p, DIR_MODE)  # mkdir's mode is less the umask


@contextmanager
def open_private(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """``open(path, mode)`` ("w" or "wb") for a file only its owner may read,
    also when it replaces a file that was readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    kw: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8"}
    with os.fdopen(fd, mode, **kw) as f:
        yield f


def write_private(path: Path, data: str | bytes) -> None:
    with open_private(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
