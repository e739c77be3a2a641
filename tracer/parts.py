"""The part files of a run that is not finalised yet (see docs/format.md).

While sampling, each table is an append-only Arrow IPC stream under
``<table>.parts/NNNNNN.arrows``, one record batch per flush.  A tracer killed
in the middle of a flush leaves the last batch cut short; a reader keeps every
whole batch before it.  Runs killed under the previous writer have one
Parquet file per flush instead (``<table>.parts/NNNNNN.parquet``): they are
read too.

Used by the writer (the final merge) and by the analysis (loading a run that
was killed or is still being written); kept free of imports, pyarrow is
passed in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STREAM_SUFFIX = ".arrows"
LEGACY_SUFFIX = ".parquet"

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


def read_stream(pa: Any, path: Path) -> tuple[Any | None, list[Any], str | None]:
    """Read one IPC stream part: ``(its schema, its whole batches, why it stopped early)``.

    * a clean stream (with or without its end-of-stream marker): (schema, batches, None);
    * a batch cut short (a kill, or a write still going on): (schema, the whole
      batches before it, why);
    * nothing written yet, or the header cut short: (None, [], None);
    * anything else that is not a stream: (None, [], why).

    Reads into memory (not a memory map: a writer truncating the file after a
    failed write must not take the reader down with a SIGBUS).  OSError from
    opening the file propagates.
    """
    with pa.OSFile(str(path)) as f:
        try:
            reader = pa.ipc.open_stream(f)
        except (OSError, pa.ArrowInvalid) as e:
            if _is_torn_header(path):
                return None, [], None
            return None, [], _one_line(e)
        batches = []
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                return reader.schema, batches, None
            except (OSError, pa.ArrowInvalid) as e:
                return reader.schema, batches, _one_line(e)


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
