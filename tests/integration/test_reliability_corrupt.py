"""Damaged run folders: ``circuit summary`` says what is wrong with which file,
in one line, exit status 2, never a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import circuit
from circuit.analysis.run import RunFormatError
from circuit.cli import main
from tests.support.helpers import cli, trace


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("good")
    status, _run = trace(tmp, "import time; time.sleep(0.3)")
    assert status == 0
    return tmp / "run"


@pytest.fixture
def run_copy(good_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(good_run, dst)
    return dst


def _summary_fails(run, names: str) -> str:
    """``circuit summary RUN`` (in-process: the real CLI entry point, minus the
    interpreter start-up; an uncaught exception fails the test)."""
    f = io.StringIO()
    with contextlib.redirect_stderr(f), contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["summary", str(run)])
    assert code == 2, (out.getvalue(), f.getvalue())
    lines = f.getvalue().strip().splitlines()
    assert len(lines) == 1, f.getvalue()
    assert lines[0].startswith("circuit: error: ")
    assert names in lines[0], lines[0]
    # the JSON form fails the same way, printing nothing on stdout
    fj = io.StringIO()
    with contextlib.redirect_stderr(fj), contextlib.redirect_stdout(io.StringIO()) as outj:
        assert main(["summary", str(run), "--json"]) == 2
    assert fj.getvalue() == f.getvalue() and outj.getvalue() == ""
    return lines[0]


def test_summary_error_as_a_real_process(run_copy):
    f = run_copy / "threads.parquet"
    f.write_bytes(f.read_bytes()[:100])
    r = cli("summary", str(run_copy))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0]  # one line
    assert str(f) in r.stderr


pytestmark = pytest.mark.integration


def test_good_run_loads(good_run):
    r = cli("summary", str(good_run), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["finalized"] is True


def test_truncated_parquet(run_copy):
    f = run_copy / "threads.parquet"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    msg = _summary_fails(run_copy, str(f))
    assert "corrupted or truncated" in msg


def test_parquet_of_garbage(run_copy):
    f = run_copy / "processes.parquet"
    f.write_bytes(b"PAR1 not really parquet at all")
    _summary_fails(run_copy, str(f))


def test_parquet_with_the_wrong_columns(run_copy):
    f = run_copy / "threads.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), f)
    msg = _summary_fails(run_copy, str(f))
    assert "columns" in msg


def test_empty_parquet_file(run_copy):
    f = run_copy / "fds.parquet"
    f.write_bytes(b"")
    _summary_fails(run_copy, str(f))


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"\x00\xff\xfe garbage", b"[1, 2]", b'"a string"', b"{}", b"null"],
)
def test_garbage_meta(run_copy, content):
    f = run_copy / "meta.json"
    f.write_bytes(content)
    _summary_fails(run_copy, str(f))


@pytest.mark.parametrize("version", [99, 0, "1", None, 1.5])
def test_unknown_format_version(run_copy, version):
    f = run_copy / "meta.json"
    meta = json.loads(f.read_text())
    meta["format_version"] = version
    f.write_text(json.dumps(meta))
    msg = _summary_fails(run_copy, str(f))
    assert "format_version" in msg


@pytest.mark.parametrize("field", ["start_ns", "wall_s", "samples", "rate_hz_achieved", "command"])
def test_meta_field_of_the_wrong_type(run_copy, field):
    f = run_copy / "meta.json"
    meta = json.loads(f.read_text())
    meta[field] = {"not": "what it should be"}
    f.write_text(json.dumps(meta))
    msg = _summary_fails(run_copy, str(f))
    assert field in msg


def test_meta_is_a_folder(run_copy):
    f = run_copy / "meta.json"
    f.unlink()
    f.mkdir()
    _summary_fails(run_copy, str(f))


def test_missing_meta(run_copy):
    (run_copy / "meta.json").unlink()
    _summary_fails(run_copy, "no meta.json")


@pytest.mark.parametrize("table", ["threads", "processes", "procs", "fds"])
def test_missing_table_of_a_finalized_run(run_copy, table):
    (run_copy / f"{table}.parquet").unlink()
    msg = _summary_fails(run_copy, str(run_copy / f"{table}.parquet"))
    assert "missing" in msg


def test_a_finalized_run_from_before_the_maps_table_loads(run_copy):
    # maps.parquet came with the py-spy work, without a new format version:
    # runs finalised before it have no such file, and must load.
    (run_copy / "maps.parquet").unlink()
    run = circuit.load(run_copy)
    assert run.maps.empty and len(run.threads) and run.load_warnings == []
    assert run.summary()["samples"] > 0


def test_not_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("hello")
    _summary_fails(f, str(f))
    _summary_fails(tmp_path / "nowhere", str(tmp_path / "nowhere"))


def _unfinalize(run_copy) -> None:
    meta = json.loads((run_copy / "meta.json").read_text())
    meta["finalized"] = False
    (run_copy / "meta.json").write_text(json.dumps(meta))


def _to_stream(src, dst) -> None:
    """A table file as the writer's part stream: one record batch per flush."""
    table = pq.read_table(src)
    with pa.OSFile(str(dst), "w") as f, pa.ipc.new_stream(f, table.schema) as w:
        for b in table.to_batches(max_chunksize=max(1, len(table) // 3)):
            w.write_batch(b)


@pytest.mark.parametrize("suffix", [".arrows", ".parquet"])  # .parquet: the previous writer's
def test_unfinalized_run_skips_a_torn_part(run_copy, suffix):
    # An unfinalized run (tracer killed) with one unreadable part: the rest
    # loads, with a warning naming the part.
    _unfinalize(run_copy)
    parts = run_copy / "threads.parts"
    parts.mkdir()
    if suffix == ".arrows":
        _to_stream(run_copy / "threads.parquet", parts / "000000.arrows")
        (run_copy / "threads.parquet").unlink()
    else:
        (run_copy / "threads.parquet").rename(parts / "000000.parquet")
    (parts / f"000001{suffix}").write_bytes(b"PAR1 torn")
    run = circuit.load(run_copy)
    assert len(run.threads) > 0
    assert any(f"unreadable part 000001{suffix}" in w for w in run.load_warnings)
    r = cli("summary", str(run_copy), "--json")
    assert r.returncode == 0
    assert any(f"000001{suffix}" in w for w in json.loads(r.stdout)["warnings"])


def test_unfinalized_run_keeps_the_whole_batches_of_a_torn_stream(run_copy):
    # The tracer was killed inside a flush: the part stream ends in a batch
    # cut short.  The whole batches before it load, with a warning.
    _unfinalize(run_copy)
    full = len(pq.read_table(run_copy / "threads.parquet"))
    parts = run_copy / "threads.parts"
    parts.mkdir()
    f = parts / "000000.arrows"
    _to_stream(run_copy / "threads.parquet", f)
    (run_copy / "threads.parquet").unlink()
    os.truncate(f, f.stat().st_size - 12)  # the end marker and the last batch's tail
    run = circuit.load(run_copy)
    assert 0 < len(run.threads) < full
    assert any("000000.arrows" in w and "cut short" in w for w in run.load_warnings)
    assert not [w for w in run.load_warnings if "unreadable" in w]
    r = cli("summary", str(run_copy), "--json")
    assert r.returncode == 0
    assert any("cut short" in w for w in json.loads(r.stdout)["warnings"])


def test_load_raises_run_format_error(run_copy):
    (run_copy / "meta.json").write_text("{")
    with pytest.raises(RunFormatError, match=r"meta\.json"):
        circuit.load(run_copy)
