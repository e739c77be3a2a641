"""circuit export: Chrome Trace Event JSON structure and the CSV zip."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from circuit.analysis import export as E
from circuit.analysis import metrics as M
from circuit.analysis.summary import with_durations
from circuit.cli import main
from tests.support.report_data import (
    GIL_ROWS_FOR_BENCH,
    GIL_TABLE_FOR_BENCH,
    T0,
    fake_run,
    gil_table,
    process_frame,
    thread_frame,
    trace_workload,
)

ROWS = [
    (0, 1, 11, "main", "R", "running", -1, 0, 0, 0),
    (10, 1, 11, "main", "S", "sleep", 35, 5, 1, 0),
    (20, 1, 11, "main", "S", "sleep", 35, 5, 1, 0),
    (0, 1, 12, "w", "S", "poll", 232, 0, 0, 0),
]


def _check_trace(doc: dict, threads: pd.DataFrame, period: int) -> None:
    ev = doc["traceEvents"]
    assert isinstance(ev, list) and ev
    ev = [e for e in ev if e.get("tid") != E.GIL_TRACK_TID]  # not a thread: see below
    slices = [e for e in ev if e["ph"] == "X"]
    for e in slices:
        assert {"ts", "dur", "pid", "tid", "name"} <= set(e)
        assert e["dur"] >= 0 and isinstance(e["pid"], int) and isinstance(e["tid"], int)
    # slice durations add up to each thread's sampled time (µs)
    dur = pd.DataFrame(slices).groupby("tid")["dur"].sum()
    expected = with_durations(threads, period).groupby("tid")["dt_ns"].sum() / 1000
    for tid, us in expected.items():
        assert dur[tid] == pytest.approx(us, abs=0.01)
    names = {(e["pid"], e["tid"]) for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {(int(p), int(t)) for p, t in threads[["pid", "tid"]].drop_duplicates().values}
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in ev)


def test_chrome_trace_structure_hand_built() -> None:
    marks = pd.DataFrame(
        {
            "t_ns": [T0 + 5_000_000],
            "pid": [1],
            "tid": [11],
            "name": ["task-start"],
            "field_task": [3],
        }
    )
    procs = process_frame(
        [
            {"t_ms": t, "pid": 1, "cpu_ms": t, "fds_file": 3, "fds_socket": t // 10}
            for t in (0, 10, 20)
        ]
    )
    run = fake_run(thread_frame(ROWS), procs, marks)
    doc = json.loads(json.dumps(E.chrome_trace(run)))  # really JSON-serialisable
    _check_trace(doc, run.threads, M.run_period(run.meta))
    ev = doc["traceEvents"]
    x = [e for e in ev if e["ph"] == "X" and e["tid"] == 11]
    assert [(e["name"], e["ts"], e["dur"]) for e in x] == [
        ("running", 0.0, 10000.0),
        ("sleep", 10000.0, 20000.0),
    ]
    assert x[1]["args"]["syscall"] == "nanosleep"
    inst = [e for e in ev if e["ph"] == "i"]
    assert inst == [
        {"ph": "i", "s": "t", "name": "task-start", "cat": "mark", "ts": 5000.0, "pid": 1,
         "tid": 11, "args": {"task": 3}}
    ]  # fmt: skip
    counters = {e["name"] for e in ev if e["ph"] == "C"}
    assert counters == {"CPU (cores)", "open fds"}
    fdc = [e["args"] for e in ev if e["ph"] == "C" and e["name"] == "open fds"]
    assert [a["socket"] for a in fdc] == [0, 1, 2]


def test_gil_holder_track_where_the_interpreter_said_who_held_it(tmp_path: Path) -> None:
    th = thread_frame(GIL_ROWS_FOR_BENCH)
    run = fake_run(th)
    assert not [e for e in E.chrome_trace(run)["traceEvents"] if e.get("cat") == "gil"]
    run.gil = gil_table([*GIL_TABLE_FOR_BENCH, (20, 1, 0, 2, 2)])
    doc = json.loads(json.dumps(E.chrome_trace(run)))
    track = [e for e in doc["traceEvents"] if e.get("tid") == E.GIL_TRACK_TID]
    assert [e["name"] for e in track if e["ph"] == "M"] == ["thread_name"]
    held = [e for e in track if e["ph"] == "X"]
    assert [(e["name"], e["ts"], e["dur"]) for e in held] == [
        ("GIL: t1 (tid 1)", 0.0, 10_000.0),
        ("GIL: t2 (tid 2)", 10_000.0, 10_000.0),  # then free: no slice
    ]
    _check_trace(doc, th, 10_000_000)
    out = E.write_csv_zip(run, tmp_path / "x.zip")
    with zipfile.ZipFile(out) as z:
        assert "gil.csv" in z.namelist()
        assert len(pd.read_csv(z.open("gil.csv"))) == 3


@pytest.mark.integration
def test_export_cli_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs" / "threads"
    trace_workload(out, "threads", "io", 2)
    assert main(["export", str(out), "--format", "perfetto"]) == 0
    path = out.with_name("threads.trace.json")
    doc = json.loads(path.read_text())
    import circuit

    run = circuit.load(out)
    _check_trace(doc, run.threads, M.run_period(run.meta))
    waits = {e["name"] for e in doc["traceEvents"] if e["ph"] == "X"}
    assert "sleep" in waits  # the worker threads' time.sleep
    assert sum(1 for e in doc["traceEvents"] if e["ph"] == "i") == 4  # 2 tasks x start/end

    zpath = tmp_path / "t.zip"
    assert main(["export", str(out), "--format", "csv", "-o", str(zpath)]) == 0
    with zipfile.ZipFile(zpath) as z:
        assert set(z.namelist()) == {f"{n}.csv" for n in E.csv_tables(run)}
        th = pd.read_csv(z.open("threads.csv"))
        assert len(th) == len(run.threads)
        iv = pd.read_csv(z.open("intervals.csv"))
        assert (
            iv["dur_ns"].sum()
            == M.state_intervals(run.threads, M.run_period(run.meta))["dur_ns"].sum()
        )


def test_export_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
