"""Python thread names in every renderer (analysis/names.py), on hand-built runs:
timeline lanes, the CPU legend, Perfetto thread names, the CSV export, the
summary's thread table.  The real-process check is
tests/integration/test_thread_names.py."""

from __future__ import annotations

import io
import zipfile

import matplotlib.pyplot as plt
import pandas as pd

from circuit.analysis import export as E
from circuit.analysis import plots
from circuit.analysis.names import thread_label, with_python_names
from circuit.analysis.pyspy import stacks_from_records
from tests.support.report_data import T0, fake_run, thread_frame

# pid 1: the main thread (tid 1) and two workers; tid 3 is never in a dump
# (a thread started after the last one, or a native thread): it keeps its
# kernel name.
ROWS = [
    (t, 1, tid, "python3", "R" if tid == 2 else "S", "running" if tid == 2 else "sleep", 0, t, 0, 0)
    for tid in (1, 2, 3)
    for t in range(0, 100, 10)
]


def _dump(t_ms: int, names: dict[int, str | None]) -> dict:
    return {
        "t_ns": T0 + t_ms * 1_000_000,
        "end_ns": T0 + t_ms * 1_000_000 + 5,
        "pid": 1,
        "trigger": "periodic",
        "threads": [
            {"tid": tid, "name": n, "owns_gil": False, "active": False, "frames": []}
            for tid, n in names.items()
        ],
    }


def _run():
    run = fake_run(thread_frame(ROWS))
    # the last dump (interpreter shutdown) lost worker-0's name: the earlier one stands
    run.stacks = stacks_from_records(
        [_dump(20, {1: "MainThread", 2: "worker-0"}), _dump(90, {1: "MainThread", 2: None})]
    )
    return run


def test_thread_label_format() -> None:
    assert thread_label(24369, 24371, "python3", "worker-0") == "worker-0 (tid 24371)"
    assert thread_label(24369, 24369, "python3", None) == "python3 (tid 24369)"
    assert thread_label(7, 8, "python3", "", multi_pid=True) == "7/python3 (tid 8)"


def test_with_python_names_adds_a_column_after_name() -> None:
    df = pd.DataFrame({"pid": [1, 1, 2], "tid": [1, 2, 2], "name": ["a", "b", "c"], "x": [0, 0, 0]})
    out = with_python_names(df, {(1, 2): "worker-0", (2, 2): "other"})
    assert list(out.columns) == ["pid", "tid", "name", "python_name", "x"]
    assert out["python_name"].tolist() == ["", "worker-0", "other"]
    assert with_python_names(df, {})["python_name"].tolist() == ["", "", ""]


def test_timeline_lanes_and_cpu_legend_use_python_names() -> None:
    run = _run()
    fig = plots.timeline(run)
    lanes = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert lanes == ["MainThread (tid 1)", "worker-0 (tid 2)", "python3 (tid 3)"]
    plt.close(fig)
    fig = plots.cpu(run)
    legend = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    assert "worker-0 (tid 2)" in legend
    plt.close(fig)


def test_perfetto_thread_names_are_python_names_with_tids() -> None:
    ev = E.chrome_trace(_run())["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in ev if e["name"] == "thread_name"}
    assert names == {1: "MainThread (tid 1)", 2: "worker-0 (tid 2)", 3: "python3 (tid 3)"}


def test_csv_threads_and_intervals_have_python_name(tmp_path) -> None:
    out = E.write_csv_zip(_run(), tmp_path / "x.csv.zip")
    with zipfile.ZipFile(out) as z:
        for table in ("threads", "intervals"):
            df = pd.read_csv(io.BytesIO(z.read(f"{table}.csv")), keep_default_na=False)
            assert list(df.columns)[list(df.columns).index("name") + 1] == "python_name"
            got = df.drop_duplicates("tid").set_index("tid")["python_name"].to_dict()
            assert got == {1: "MainThread", 2: "worker-0", 3: ""}


def test_summary_thread_table_names_threads_by_their_python_name(capsys) -> None:
    from circuit.analysis.summary import summarize
    from circuit.commands.summary import render

    run = _run()
    run.maps = None
    run.gil = None
    s = summarize(run)
    render(s)
    out = capsys.readouterr().out
    assert "worker-0" in out and "MainThread" in out
    rows = {line.split("│")[2].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "worker-0" in rows["2"] and "python3" not in rows["2"]
    assert "python3" in rows["3"]


def test_gil_plot_bars_use_python_names() -> None:
    from tests.support.report_data import GIL_ROWS_FOR_BENCH

    run = fake_run(thread_frame(GIL_ROWS_FOR_BENCH))
    run.stacks = stacks_from_records([_dump(0, {1: "worker-a"})])
    fig = plots.gil(run)
    ticks = {t.get_text() for t in fig.axes[0].get_yticklabels()}
    assert ticks == {"worker-a (tid 1)", "t2 (tid 2)"}
    plt.close(fig)
