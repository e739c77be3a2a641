"""Unit tests of analysis.bench on hand-built results tables."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from circuit.analysis import bench as B
from circuit.errors import CircuitError
from circuit.workloads import SERVER_MODULE
from tests.support.report_data import GIL_ROWS_FOR_BENCH, process_frame, thread_frame


def results() -> pd.DataFrame:
    rows = []
    for model, wall, cpu in (
        ("threads", 1.0, 0.1),
        ("sequential", 4.0, 0.1),
        ("asyncio", 1.2, 0.2),
    ):
        for tasks, scale in ((2, 0.5), (4, 1.0)):
            for rep, jitter in enumerate((1.0, 1.1, 0.9)):
                rows.append(
                    {
                        "workload": "io",
                        "model": model,
                        "tasks": tasks,
                        "repeat": rep,
                        "wall_s": wall * scale * jitter,
                        "cpu_s": cpu,
                        "run": f"runs/{model}-{tasks}-{rep}",
                    }
                )
    return pd.DataFrame(rows)


def test_model_comparison_medians_in_article_order() -> None:
    cmp = B.model_comparison(results())
    assert cmp["model"].tolist()[::2] == ["sequential", "threads", "asyncio"]
    row = cmp[(cmp["model"] == "sequential") & (cmp["tasks"] == 4)].iloc[0]
    assert row["wall_s"] == pytest.approx(4.0)  # median of 4.0, 4.4, 3.6
    assert row["runs"] == 3
    # parallelism is derived when the table lacks it
    assert row["parallelism"] == pytest.approx(0.1 / 4.0)


@pytest.mark.parametrize("drop", [["cpu_s"], ["tasks"], ["workload"], ["run", "repeat"]])
def test_model_comparison_degrades_without_columns(drop: list[str]) -> None:
    cmp = B.model_comparison(results().drop(columns=drop))
    assert len(cmp) > 0 and "wall_s" in cmp.columns
    for c in drop:
        assert c not in cmp.columns


def test_missing_essentials_give_empty_frames() -> None:
    df = results().drop(columns=["model"])
    assert B.model_comparison(df).empty
    assert B.scaling(df).empty
    assert B.scaling(results().drop(columns=["wall_s"])).empty
    assert B.per_run_waits(results().drop(columns=["run"])).empty
    assert B.sleep_split(pd.DataFrame()).empty
    assert B.gil_vs_threads(pd.DataFrame()).empty


def test_scaling_keeps_workloads_with_two_task_counts() -> None:
    df = pd.concat(
        [
            results(),
            pd.DataFrame([{"workload": "cpu", "model": "threads", "tasks": 2, "wall_s": 1}]),
        ]
    )
    sc = B.scaling(df)
    assert set(sc["workload"]) == {"io"}
    thr = sc[sc["model"] == "threads"].sort_values("tasks")
    assert thr["wall_s"].tolist() == pytest.approx([0.5, 1.0])


def test_read_results_formats_and_relative_paths(tmp_path: Path) -> None:
    df = results()
    df.to_csv(tmp_path / "results.csv", index=False)
    assert B.is_bench(tmp_path)
    got = B.read_results(tmp_path)
    assert got["run"].iloc[0] == str(tmp_path / "runs/threads-2-0")
    (tmp_path / "results.csv").unlink()
    (tmp_path / "bench.json").write_text(
        json.dumps({"name": "b", "results": df.to_dict("records")})
    )
    assert B.is_bench(tmp_path)
    assert len(B.read_results(tmp_path)) == len(df)
    assert B.bench_meta(tmp_path) == {"name": "b"}


def test_not_a_bench(tmp_path: Path) -> None:
    assert not B.is_bench(tmp_path)
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "results.csv").write_text("a\n1\n")
    assert not B.is_bench(tmp_path)  # a run folder is never a bench
    with pytest.raises(CircuitError):
        B.read_results(tmp_path / "nope")


def _fake_loader(table: dict[str, object]):
    def load(path: str):
        if path not in table:
            raise CircuitError("missing")
        return table[path]

    return load


def test_per_run_waits_sleep_split_and_gil_vs_threads() -> None:
    sleepy = thread_frame(
        [(t, 1, 1, "m", "S", "sleep", 35, 0, 0, 0) for t in range(0, 100, 10)]
        + [(t, 1, 2, "m", "R", "running", -1, t, 0, 0) for t in range(0, 50, 10)]
    )
    gil = thread_frame(GIL_ROWS_FOR_BENCH)
    procs = process_frame([{"t_ms": 0, "pid": 1, "fds_socket": 10, "fds_epoll": 1}])
    mk = lambda th: SimpleNamespace(  # noqa: E731
        meta={"rate_hz_achieved": 100.0}, threads=th, processes=procs
    )
    res = pd.DataFrame(
        [
            {"workload": "io", "model": "asyncio", "tasks": 2, "cpu_s": 0.05, "run": "a"},
            {"workload": "cpu", "model": "threads", "tasks": 2, "cpu_s": 0.5, "run": "g"},
            {"workload": "io", "model": "threads", "tasks": 2, "cpu_s": 0.1, "run": "missing"},
        ]
    )
    runs = B.per_run_waits(res, loader=_fake_loader({"a": mk(sleepy), "g": mk(gil)}))
    assert runs["run"].tolist() == ["a", "g"]  # the missing run is skipped
    a = runs.iloc[0]
    assert a["wait_sleep_s"] == pytest.approx(0.1)
    assert a["wait_running_s"] == pytest.approx(0.05)
    assert a["threads_seen"] == 2
    assert a["sockets_peak"] == 10 and a["epoll_peak"] == 1
    assert np.isnan(a["gil_contention"])  # no Python process: no GIL figure
    assert runs.iloc[1]["gil_contention"] == 0.5
    split = B.sleep_split(runs)
    assert split[split["model"] == "asyncio"]["wait_sleep_s"].iloc[0] == pytest.approx(0.1)
    gvt = B.gil_vs_threads(runs)
    assert gvt["model"].tolist() == ["threads"] and gvt["threads"].tolist() == [2]


def test_per_run_waits_leaves_out_the_http_server_and_the_zombie_sample() -> None:
    # io-http: the local server (pid 9) is a process of the traced tree, not
    # the workload's; the client's last sample as a zombie is not sleep.
    th = thread_frame(
        [(t, 1, 1, "client", "S", "poll", 7, 0, 0, 0) for t in range(0, 50, 10)]
        + [(50, 1, 1, "client", "Z", "other", -1, 0, 0, 0)]
        + [(t, 9, 9, "server", "S", "poll", 232, 0, 0, 0) for t in range(0, 60, 10)]
    )
    pr = process_frame(
        [
            {"t_ms": 0, "pid": 1, "fds_socket": 1},
            {"t_ms": 0, "pid": 9, "fds_socket": 4, "fds_epoll": 1},
        ]
    )
    procs = pd.DataFrame(
        {
            "pid": [1, 9],
            "cmdline": ["python -m circuit.workloads io-http", f"python -m {SERVER_MODULE}"],
        }
    )
    run = SimpleNamespace(meta={"rate_hz_achieved": 100.0}, threads=th, processes=pr, procs=procs)
    res = pd.DataFrame([{"workload": "io-http", "model": "sequential", "tasks": 1, "run": "h"}])
    (row,) = B.per_run_waits(res, loader=_fake_loader({"h": run})).to_dict("records")
    assert row["wait_poll_s"] == pytest.approx(0.05)  # the client's 5 samples only
    assert row["wait_other_s"] == 0.0
    assert row["threads_seen"] == 1
    assert row["sockets_peak"] == 1 and row["epoll_peak"] == 0


def _sleep_runs() -> pd.DataFrame:
    """per_run_waits output: io-sleep under threads at 1 and 4 tasks (thread-
    seconds asleep grow with the tasks), 3 repeats each."""
    rows = [
        {
            "workload": "io-sleep",
            "model": "threads",
            "tasks": n,
            "repeat": r,
            "cpu_s": 0.01 * n,
            "wait_sleep_s": 0.4 * n + 0.01 * r,
            "wait_running_s": 0.01,
        }
        for r in range(3)
        for n in (1, 4)
    ]
    return pd.DataFrame(rows)


def test_sleep_split_never_pools_task_counts() -> None:
    split = B.sleep_split(_sleep_runs()).set_index("tasks")
    assert sorted(split.index) == [1, 4]
    assert split.loc[1, "wait_sleep_s"] == pytest.approx(0.41)  # median of its 3 repeats
    assert split.loc[4, "wait_sleep_s"] == pytest.approx(1.61)
    assert split.loc[4, "cpu_s"] == pytest.approx(0.04)


def test_scaling_keeps_only_lines() -> None:
    """A (workload, model) at one task count is a point, not a line: left out,
    even when the workload has other models at several counts."""
    rows = [
        {"workload": "cpu", "model": m, "tasks": n, "wall_s": w}
        for m, n, w in (
            ("threads", 1, 0.25),
            ("threads", 2, 0.5),
            ("threads", 4, 1.0),
            ("sequential", 2, 0.5),
            ("processes", 2, 0.3),
        )
    ]
    sc = B.scaling(pd.DataFrame(rows))
    assert set(sc["model"]) == {"threads"}
    assert sc["tasks"].tolist() == [1, 2, 4]


def test_compared_cells_take_the_task_count_most_models_ran() -> None:
    rows = [("cpu", m, 2) for m in ("sequential", "threads", "asyncio", "processes")]
    rows += [("cpu", "threads", n) for n in (1, 4, 8)]
    rows += [("io", m, n) for m in ("sequential", "threads") for n in (2, 4)]  # a tie: 4
    rows += [("solo", "threads", n) for n in (1, 2)]
    cmp = pd.DataFrame(rows, columns=["workload", "model", "tasks"]).assign(wall_s=1.0)
    got = B.compared_cells(cmp)
    assert sorted(got[got["workload"] == "cpu"]["model"]) == sorted(
        ["sequential", "threads", "asyncio", "processes"]
    )
    assert set(got[got["workload"] == "cpu"]["tasks"]) == {2}
    assert set(got[got["workload"] == "io"]["tasks"]) == {4}
    assert got[got["workload"] == "solo"]["tasks"].tolist() == [2]
    assert B.compared_cells(cmp.drop(columns="tasks")).equals(cmp.drop(columns="tasks"))


def test_lines_keep_series_with_two_x_values() -> None:
    df = pd.DataFrame(
        [("cpu", "threads", n, 0.1 * n) for n in (1, 2, 4)]
        + [("cpu", "asyncio", 1, 0.0), ("io", "threads", 2, 0.0)],
        columns=["workload", "model", "threads", "gil_share"],
    )
    got = B.lines(df, "threads")
    assert got[["workload", "model"]].drop_duplicates().values.tolist() == [["cpu", "threads"]]
    assert got["threads"].tolist() == [1, 2, 4]
    assert B.lines(df.drop(columns=["workload", "model"]), "threads").equals(
        df.drop(columns=["workload", "model"])
    )
    assert B.lines(df, "tasks").empty
