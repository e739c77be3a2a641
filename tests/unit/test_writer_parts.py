"""The run writer's part files: Arrow IPC streams, one record batch per flush.

A tracer killed mid-flush (the last batch cut short at any byte), a disk that
fills mid-batch, and parts left by the previous writer (one Parquet file per
flush) must all load, holding every whole flush.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import circuit
from circuit.tracer.parts import part_schema
from circuit.tracer.schema import FD_KIND_COLUMNS, arrow_schema
from circuit.tracer.writer import RunWriter, prepare_run_dir
from tests.support.helpers import tmpfs

META = {"format_version": 1, "mode": "run", "start_ns": 0, "finalized": False}
FLUSHES = 4
SAMPLES = 5  # per flush
THREADS = 4
THREADS_PART = part_schema(pa, "threads", arrow_schema("threads"))


def _add_samples(w: RunWriter, flush: int) -> None:
    """One flush's worth of samples of one process with THREADS threads."""
    for s in range(SAMPLES):
        t = 1_000_000 * flush + 1000 * s
        w.add(
            "processes",
            (t, 7, 1, THREADS, 1 << 20, t, t, 1, 2, 3, 4, 0, 0, 5, *(1,) * len(FD_KIND_COLUMNS)),
        )
        w.add_threads(
            t,
            [
                (7, 7 + i, f"worker-{i % 2}", "S" if i else "R", "futex" if i else "running",
                 202 if i else -1, 0, "futex_wait" if i else "", t, t, 2 * t, i, s, 0, i % 2)
                for i in range(THREADS)
            ],
        )  # fmt: skip


def _write(path, flushes: int = FLUSHES) -> tuple[RunWriter, dict[str, list[int]]]:
    """A writer after ``flushes`` flushes, and each table's stream length after each."""
    w = RunWriter(prepare_run_dir(path, force=False), dict(META))
    ends: dict[str, list[int]] = {"threads": [], "processes": []}
    for k in range(flushes):
        _add_samples(w, k)
        w.flush()
        for name in ends:
            ends[name].append(w.segments[name].whole)
    return w, ends


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A run killed after FLUSHES flushes (the writer is simply dropped)."""
    path = tmp_path_factory.mktemp("w") / "run"
    _w, ends = _write(path)
    return path, ends


@pytest.fixture
def run_copy(written, tmp_path):
    path, ends = written
    dst = tmp_path / "run"
    shutil.copytree(path, dst)
    return dst, ends


def _sorted(df: pd.DataFrame, keys=("pid", "tid", "t_ns")) -> pd.DataFrame:
    return df.sort_values(list(keys)).reset_index(drop=True)


def _first_flushes(df: pd.DataFrame, n: int) -> pd.DataFrame:
    return df[df.t_ns < 1_000_000 * n].reset_index(drop=True)


def test_parts_are_streams_that_load_like_the_finalized_run(tmp_path):
    w, _ends = _write(tmp_path / "run")
    parts = tmp_path / "run" / "threads.parts"
    assert sorted(p.name for p in parts.iterdir()) == ["000000.arrows"]
    with pa.ipc.open_stream(pa.OSFile(str(parts / "000000.arrows"))) as r:
        # name, state, wait, wchan as dictionaries: their offsets would defeat LZ4
        assert r.schema.equals(THREADS_PART)
        assert (
            str(r.schema.field("name").type)
            == "dictionary<values=string, indices=int32, ordered=0>"
        )
        sizes = [b.num_rows for b in r]  # no end-of-stream marker yet: ends cleanly anyway
    assert sizes == [SAMPLES * THREADS] * FLUSHES
    # Byte for byte what pyarrow's stream writer writes (LZ4 buffers), bar
    # the end marker.
    data = (parts / "000000.arrows").read_bytes()
    with pa.ipc.open_stream(data) as r:
        batches = list(r)
    sink = pa.BufferOutputStream()
    lz4 = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, THREADS_PART, options=lz4) as sw:
        for b in batches:
            sw.write_batch(b)
    assert sink.getvalue().to_pybytes() == data + b"\xff\xff\xff\xff\x00\x00\x00\x00"
    live = circuit.load(tmp_path / "run")
    threads, procs = live.threads, live.processes
    assert live.load_warnings == [
        "run was not finalized (tracer killed or still running): data up to the last flush"
    ]
    assert len(threads) == FLUSHES * SAMPLES * THREADS and len(procs) == FLUSHES * SAMPLES
    assert isinstance(threads["name"].dtype, pd.CategoricalDtype)
    w.finalize({})
    assert not parts.exists()
    done = circuit.load(tmp_path / "run")
    assert done.load_warnings == []
    pd.testing.assert_frame_equal(_sorted(threads), done.threads)
    pd.testing.assert_frame_equal(_sorted(procs, ("pid", "t_ns")), done.processes)


def _cuts(ends: list[int]) -> list[int]:
    lo, hi = ends[-2], ends[-1]
    return [lo + 1, lo + 4, lo + 8, lo + 9, lo + 100, (lo + hi) // 2, hi - 8, hi - 1]


@pytest.mark.parametrize("which", range(8))
def test_kill_mid_flush_keeps_every_whole_batch(written, run_copy, which):
    # A SIGKILL inside the last flush's write: the threads stream ends inside
    # its last batch, at any byte.  Everything up to the previous flush loads.
    full = circuit.load(written[0])
    path, ends = run_copy
    cut = _cuts(ends["threads"])[which]
    os.truncate(path / "threads.parts" / "000000.arrows", cut)
    run = circuit.load(path)
    pd.testing.assert_frame_equal(run.threads, _first_flushes(full.threads, FLUSHES - 1))
    pd.testing.assert_frame_equal(run.processes, full.processes)  # untouched
    # One warning, unless the cut fell between two messages of the flush (its
    # dictionaries, then its record batch): then the stream just ends there.
    torn = [w for w in run.load_warnings if "cut short" in w]
    assert len(torn) <= 1 and len(run.load_warnings) == 1 + len(torn), run.load_warnings
    if which in (0, 7):  # inside the first and the last message
        assert torn and "000000.arrows of threads" in torn[0]
        assert f"kept the {FLUSHES - 1} whole batches" in torn[0]
    s = run.summary()  # the analysis on top works too
    assert s["finalized"] is False


def test_kill_between_flushes_loads_silently(written, run_copy):
    full = circuit.load(written[0])
    path, ends = run_copy
    os.truncate(path / "threads.parts" / "000000.arrows", ends["threads"][-2])
    run = circuit.load(path)
    pd.testing.assert_frame_equal(run.threads, _first_flushes(full.threads, FLUSHES - 1))
    assert len(run.load_warnings) == 1  # "not finalized" only


def test_kill_between_the_thread_rows_and_the_process_rows_of_a_flush(written, run_copy):
    # A flush appends the threads batch, then the processes batch: killed in
    # between, the last flush's thread rows have no process rows.  They are
    # left out (with a warning), as the finalised run has none of that kind.
    full = circuit.load(written[0])
    path, ends = run_copy
    os.truncate(path / "processes.parts" / "000000.arrows", ends["processes"][-2])
    run = circuit.load(path)
    pd.testing.assert_frame_equal(run.processes, _first_flushes(full.processes, FLUSHES - 1))
    pd.testing.assert_frame_equal(run.threads, _first_flushes(full.threads, FLUSHES - 1))
    late = [w for w in run.load_warnings if "after the last process sample" in w]
    assert late == [
        f"left out {SAMPLES * THREADS} thread samples taken after the last process sample "
        "(the tracer stopped between writing the two tables)"
    ]


@pytest.mark.parametrize("cut", [0, 1, 4, 8, 100, -1])
def test_kill_in_the_first_flush_header(run_copy, cut):
    # Killed while the stream's header (written with the first batch) went
    # out: nothing of that table was flushed, and that is not damage.
    path, _ends = run_copy
    header = len(THREADS_PART.serialize())
    os.truncate(path / "threads.parts" / "000000.arrows", cut % header)
    run = circuit.load(path)
    assert len(run.threads) == 0 and len(run.processes) == FLUSHES * SAMPLES
    assert len(run.load_warnings) == 1, run.load_warnings


def test_a_stream_part_that_is_no_stream_is_skipped_with_a_warning(run_copy):
    path, _ends = run_copy
    (path / "processes.parts" / "000001.arrows").write_bytes(b"PAR1 torn")
    run = circuit.load(path)
    assert len(run.processes) == FLUSHES * SAMPLES
    assert any("unreadable part 000001.arrows of processes" in w for w in run.load_warnings)


def test_a_stream_of_another_table_is_skipped_with_a_warning(run_copy):
    path, _ends = run_copy
    shutil.copy(
        path / "processes.parts" / "000000.arrows", path / "threads.parts" / "000001.arrows"
    )
    run = circuit.load(path)
    assert len(run.threads) == FLUSHES * SAMPLES * THREADS
    bad = [w for w in run.load_warnings if "unreadable part 000001.arrows of threads" in w]
    assert bad and "columns" in bad[0] and "missing" in bad[0]


# -- write errors --------------------------------------------------------------


class _Disk:
    """os.write as write(2) behaves on a disk with ``budget`` bytes left: a
    write larger than what is left puts down what fits and returns that
    count, the next one fails with ENOSPC.  ``cap`` limits every write (a
    short write with room to spare).  Only the run's part files are affected."""

    def __init__(self) -> None:
        self.budget: int | None = None  # None: room enough
        self.cap: int | None = None
        self.real_write = os.write

    def write(self, fd: int, data) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".arrows"):
            return self.real_write(fd, data)
        data = memoryview(data)
        if self.cap is not None:
            data = data[: self.cap]
        if self.budget is not None:
            if self.budget == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            data = data[: self.budget]
        n = self.real_write(fd, data)
        if self.budget is not None:
            self.budget -= n
        return n


@pytest.fixture
def disk(monkeypatch):
    d = _Disk()
    monkeypatch.setattr(os, "write", d.write)
    return d


def test_short_writes_are_completed(tmp_path, disk):
    # A write(2) may put down fewer bytes than asked without failing: the
    # writer writes the rest (pyarrow's stream writer on a Python file would
    # not; it drops them silently).
    disk.cap = 100
    w, _ends = _write(tmp_path / "run")
    run = circuit.load(tmp_path / "run")
    assert len(run.threads) == FLUSHES * SAMPLES * THREADS and len(run.load_warnings) == 1
    disk.cap = None
    w.finalize({})
    assert len(circuit.load(tmp_path / "run").threads) == FLUSHES * SAMPLES * THREADS


@pytest.mark.parametrize("budget", [0, 3, 500, 1500])
def test_disk_full_mid_batch_then_a_later_flush(tmp_path, disk, budget):
    path = tmp_path / "run"
    w, ends = _write(path, flushes=1)
    _add_samples(w, 1)
    disk.budget = budget  # the threads batch (~2.2 kB) fails part-way
    with pytest.raises(OSError) as e:
        w.flush()
    assert e.value.errno == errno.ENOSPC
    first = path / "threads.parts" / "000000.arrows"
    assert first.stat().st_size == ends["threads"][0]  # cut back to its whole batch
    assert "threads" not in w.segments  # closed: the next flush starts a new part
    # What was flushed before loads, without a torn tail.
    run = circuit.load(path)
    assert len(run.threads) == SAMPLES * THREADS and len(run.load_warnings) == 1
    # The disk has room again: the next flush writes a new part of threads,
    # and the processes rows that waited behind the failed batch.
    disk.budget = None
    _add_samples(w, 2)
    w.flush()
    assert sorted(p.name for p in first.parent.iterdir()) == ["000000.arrows", "000001.arrows"]
    run = circuit.load(path)
    assert len(run.load_warnings) == 1, run.load_warnings
    assert sorted(set(run.threads.t_ns // 1_000_000)) == [0, 2]  # flush 1's threads lost
    assert sorted(set(run.processes.t_ns // 1_000_000)) == [0, 1, 2]
    threads = run.threads
    w.finalize({})
    done = circuit.load(path)
    assert done.meta["finalized"] is True and not first.parent.exists()
    pd.testing.assert_frame_equal(done.threads, _sorted(threads))


def test_disk_full_in_the_first_batch_leaves_no_file(tmp_path, disk):
    path = tmp_path / "run"
    w = RunWriter(prepare_run_dir(path, force=False), dict(META))
    _add_samples(w, 0)
    disk.budget = 100  # inside the header
    with pytest.raises(OSError):
        w.flush()
    assert list((path / "threads.parts").iterdir()) == []
    disk.budget = None
    _add_samples(w, 1)
    w.flush()
    assert [p.name for p in (path / "threads.parts").iterdir()] == ["000001.arrows"]
    run = circuit.load(path)
    assert sorted(set(run.threads.t_ns // 1_000_000)) == [1]
    assert len(run.processes) == 2 * SAMPLES and len(run.load_warnings) == 1


@pytest.fixture
def tiny_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as d:
        yield d


def test_real_disk_full_mid_batch_then_room_again(tiny_disk):
    path = tiny_disk / "run"
    w, ends = _write(path, flushes=1)
    first = path / "threads.parts" / "000000.arrows"
    # Fill the disk, then give back one page: the next batch fits only in part.
    filler = tiny_disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:
            pass
    os.truncate(filler, filler.stat().st_size - 4096)
    for s in range(20):  # a ~12 kB batch of thread rows
        _add_samples(w, 1 + s)
    with pytest.raises(OSError) as e:
        w.flush()
    assert e.value.errno == errno.ENOSPC
    assert first.stat().st_size == ends["threads"][0]  # cut back (the disk had taken more)
    run = circuit.load(path)
    assert len(run.threads) == SAMPLES * THREADS and len(run.load_warnings) == 1
    filler.unlink()
    _add_samples(w, 30)
    w.flush()
    run = circuit.load(path)
    assert len(run.load_warnings) == 1, run.load_warnings
    assert sorted(set(run.threads.t_ns // 1_000_000)) == [0, 30]
    assert len(run.processes) == 22 * SAMPLES  # nothing of the processes was lost


# -- runs killed under the previous writer -------------------------------------


def _legacy_part(path, name: str, df: pd.DataFrame, n: int) -> None:
    """A part as the previous writer wrote it: one Parquet file per flush."""
    schema = arrow_schema(name)
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    parts = path / f"{name}.parts"
    parts.mkdir(exist_ok=True)
    pq.write_table(table, parts / f"{n:06d}.parquet", compression="zstd")


def _as_plain(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(
        {c: "object" for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)}
    )


def test_legacy_parquet_parts_still_load(written, tmp_path):
    full = circuit.load(written[0])
    path = tmp_path / "run"
    path.mkdir()
    shutil.copy(written[0] / "meta.json", path / "meta.json")
    for name, df in [("threads", full.threads), ("processes", full.processes)]:
        plain = _as_plain(df)
        half = len(plain) // 2
        _legacy_part(path, name, plain.iloc[:half], 0)
        _legacy_part(path, name, plain.iloc[half:], 1)
    run = circuit.load(path)
    pd.testing.assert_frame_equal(run.threads, full.threads)
    pd.testing.assert_frame_equal(run.processes, full.processes)
    assert len(run.load_warnings) == 1


def test_legacy_and_stream_parts_load_and_merge_together(written, tmp_path):
    # Not a case a real run produces (one writer per run), but both readers
    # must give the same shape: a legacy part, then this writer's streams.
    full = circuit.load(written[0])
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    shutil.copy(written[0] / "meta.json", path / "meta.json")
    old = _first_flushes(full.threads, 1)
    _legacy_part(path, "threads", _as_plain(old), 0)
    w = RunWriter(path, dict(META))
    w.next_segment["threads"] = 1
    _add_samples(w, 1)
    w.flush()
    run = circuit.load(path)
    assert sorted(set(run.threads.t_ns // 1_000_000)) == [0, 1]
    assert set(run.threads["name"].cat.categories) == {"worker-0", "worker-1"}
    live = _sorted(run.threads)
    w.finalize({})
    done = circuit.load(path)
    pd.testing.assert_frame_equal(done.threads, live)
    pd.testing.assert_frame_equal(_first_flushes(done.threads, 1), _sorted(old))


# -- permissions -------------------------------------------------------------


def test_parts_are_owner_only_even_with_umask_0(tmp_path):
    old = os.umask(0)
    try:
        _write(tmp_path / "run", flushes=2)
    finally:
        os.umask(old)
    path = tmp_path / "run"
    for p in [path, *path.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    assert json.loads((path / "meta.json").read_text())["finalized"] is False
