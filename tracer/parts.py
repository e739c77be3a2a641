"""The part files of a run that is not finalised yet (see docs/format.md).

While sampling, each table is an append-only Arrow IPC stream under
``<table>.parts/NNNNNN.arrows``, one record batch per flush.  A tracer killed
in the middle of a flush leaves the last batch cut short; a reader keeps every
whole batch before it.  Parts written as one Parquet file per flush
(``<table>.parts/NNNNNN.parquet``, as older circuit versions wrote them) are
read too, so a run killed under such a version still loads.

Written by the writer (:class:`Segment`, also for the final merge's spill
files), read by the final merge and by the analysis (loading a run that was
killed or is still being written); kept free of imports, pyarrow is passed
in.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STREAM_SUFFIX = ".arrows"
LEGACY_SUFFIX = ".parquet"

# Run folders reveal command lines, paths and addresses: owner only.
DIR_MODE = 0o700
FILE_MODE = 0o600

# The string columns a part stores dictionary-encoded (int32 indices), per
# table: the repetitive ones of the threads table.  A string column's offsets
# grow with every row, which LZ4 cannot compress (~4 bytes a row each);
# dictionary indices repeat with the rows.  Merged tables have plain strings.
DICTIONARY_COLUMNS = {"threads": ("name", "state", "wait", "wchan")}


def part_schema(pa: Any, table: str, schema: Any) -> Any:
    """The schema of ``table``'s part streams, from the table's ``schema``."""
    cols = DICTIONARY_COLUMNS.get(table, ())
    return pa.schema(
        [
            pa.field(f.name, pa.dictionary(pa.int32(), f.type)) if f.name in cols else f
            for f in schema
        ]
    )


def part_files(parts_dir: Path) -> list[Path]:
    """The parts of one table, in name (= write) order: streams and legacy Parquet files."""
    if not parts_dir.is_dir():
        return []
    files = [*parts_dir.glob(f"*{STREAM_SUFFIX}"), *parts_dir.glob(f"*{LEGACY_SUFFIX}")]
    return sorted((f for f in files if not f.name.startswith(".")), key=lambda f: f.name)


class Segment:
    """One table's current part: an Arrow IPC stream, and its length after its
    last whole batch.

    A ``pa.ipc.new_stream`` writer encodes each batch into memory (the stream
    header comes with the first); one os.write loop appends that to the file,
    which is open only while a flush appends to it: a file held open for
    writing would make ``mount -o remount,ro`` of the output disk fail with
    EBUSY.  The stream is never closed: readers take the end of the file as
    its end.
    """

    def __init__(self, pa: Any, path: Path, schema: Any, options: Any) -> None:
        self.path = path
        self.encoded = Encoded()
        self.stream = pa.ipc.new_stream(self.encoded, schema, options=options)
        self.whole = 0  # 0: nothing written yet, not even the header

    def append(self, batch: Any) -> None:
        self.stream.write_batch(batch)
        data = self.encoded.take()
        if self.whole:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        else:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            write_all(fd, data)  # no fsync: with the OS, a killed tracer loses nothing
        except BaseException:
            self._cut(fd)
            raise
        finally:
            os.close(fd)
        self.whole += len(data)

    def _cut(self, fd: int) -> None:
        """After a failed write: cut the file back to its last whole batch (or
        remove it if it has none), so it stays a readable stream."""
        with contextlib.suppress(OSError):
            if self.whole:
                os.ftruncate(fd, self.whole)
            else:
                self.path.unlink()


class Encoded:
    """The in-memory sink of a part's stream writer: what it wrote since the last take()."""

    closed = False

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: Any) -> None:
        self.buf += data

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytearray:
        data, self.buf = self.buf, bytearray()
        return data


def write_all(fd: int, data: Any) -> None:
    """os.write until every byte is down: a nearly full disk can write short."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class StreamPart:
    """One IPC stream part, read batch by batch (iterate it once).

    After iterating, ``schema`` is the stream's schema (None: nothing written
    yet, or the header cut short, or not a stream) and ``why`` says why it
    stopped early (None: a clean end, or nothing in it yet).  A batch cut short
    (a kill, or a write still going on) ends the iteration: the whole batches
    before it were yielded.

    Reads into memory (not a memory map: a writer truncating the file after a
    failed write must not take the reader down with a SIGBUS).  OSError from
    opening the file propagates.
    """

    def __init__(self, pa: Any, path: Path) -> None:
        self.pa, self.path = pa, path
        self.schema: Any = None
        self.why: str | None = None

    def __iter__(self) -> Iterator[Any]:
        pa = self.pa
        with pa.OSFile(str(self.path)) as f:
            try:
                reader = pa.ipc.open_stream(f)
            except (OSError, pa.ArrowInvalid) as e:
                if not _is_torn_header(self.path):
                    self.why = _one_line(e)
                return
            self.schema = reader.schema
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except (OSError, pa.ArrowInvalid) as e:
                    self.why = _one_line(e)
                    return
                yield batch


def read_stream(pa: Any, path: Path) -> tuple[Any | None, list[Any], str | None]:
    """Read one IPC stream part whole: ``(its schema, its whole batches, why it stopped early)``.

    * a clean stream (with or without its end-of-stream marker): (schema, batches, None);
    * a batch cut short: (schema, the whole batches before it, why);
    * nothing written yet, or the header cut short: (None, [], None);
    * anything else that is not a stream: (None, [], why).
    """
    part = StreamPart(pa, path)
    batches = list(part)
    return part.schema, batches, part.why


_CONTINUATION = b"\xff\xff\xff\xff"


def _is_torn_header(path: Path) -> bool:
    """True if the file is empty or ends inside its first message, the schema
    (an IPC message: 0xFFFFFFFF, int32 length of the metadata, the metadata)."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = os.fstat(f.fileno()).st_size
    if not head.startswith(_CONTINUATION[: len(head)]):
        return False
    if len(head) < 8:
        return True
    return size < 8 + int.from_bytes(head[4:], "little", signed=True)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
