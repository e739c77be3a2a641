"""circuit bench: the pure matrix/aggregation logic, then one tiny real bench."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import circuit
from circuit.analysis.bench import FD_KINDS, aggregate, run_metrics, top_wait
from circuit.bench import Cell, matrix, schedule
from circuit.cli import main
from circuit.commands.bench import parse_names, parse_tasks
from circuit.errors import CircuitError
from circuit.tracer.waits import WAIT_REASONS

# ---------------------------------------------------------------- pure logic


def test_matrix_and_interleaved_schedule() -> None:
    cells = matrix(["io-sleep", "cpu-count"], ["sequential", "threads"], [1, 4])
    assert len(cells) == 8
    assert cells[0] == Cell("io-sleep", "sequential", 1)
    plan = schedule(cells, 2)
    assert len(plan) == 16
    # every cell once before any cell a second time
    assert [r for _, r in plan] == [1] * 8 + [2] * 8
    assert [c for c, _ in plan[:8]] == cells
    assert cells[0].run_name(2) == "io-sleep_sequential_t1_r2"


def _proc(pid: int, cpu: float, cmd: str, **kinds: int) -> dict[str, Any]:
    return {
        "pid": pid,
        "ppid": 1,
        "cmdline": cmd,
        "cpu_s": cpu,
        "threads_peak": 1 + kinds.pop("threads", 0),
        "fds_peak_by_kind": {k: kinds.get(k, 0) for k in FD_KINDS},
    }


def _thread(pid: int, vol: int, invol: int, **waits: float) -> dict[str, Any]:
    return {
        "pid": pid,
        "tid": pid,
        "ctx_voluntary": vol,
        "ctx_involuntary": invol,
        "time_by_wait": {w: waits.get(w, 0.0) for w in WAIT_REASONS},
    }


def test_run_metrics_leave_the_server_out() -> None:
    summary = {
        "wall_s": 2.0,
        "exit_code": 0,
        "processes": [
            _proc(10, 0.5, "python -m circuit.workloads io-http", socket=5, epoll=1),
            _proc(11, 0.3, "python -m circuit.workloads.server --port 0", socket=7, epoll=1),
            _proc(12, 0.25, "python -m circuit.workloads io-http", socket=1),
        ],
        "threads": [
            _thread(10, 10, 2, poll=1.5, running=0.5),
            _thread(11, 100, 100, poll=2.0),
            _thread(12, 4, 4, socket=0.5),
        ],
    }
    result = {"wall_s": 0.8, "pid": 10, "server_pid": 11, "python": "/py", "gil_enabled": True}
    row = run_metrics(summary, result)
    assert row["ok"]
    assert row["wall_s"] == 0.8
    assert row["run_wall_s"] == 2.0
    assert row["cpu_s"] == pytest.approx(0.75)
    assert row["parallelism"] == pytest.approx(0.375)
    assert row["ctx_per_s"] == pytest.approx(10.0)
    assert row["server_cpu_s"] == pytest.approx(0.3)
    assert row["fds_socket"] == 6 and row["fds_epoll"] == 1
    assert row["processes"] == 2
    assert math.isnan(row["gil_contention"])  # no GIL data in this summary
    # the GIL figures of the workload's processes only
    gil = {
        "processes": [
            {"pid": 10, "source": "futex", "wait_s": 1.0, "thread_s": 2.0, "switches": None},
            {"pid": 11, "source": "interpreter", "wait_s": 3.0, "thread_s": 3.0, "switches": 9},
        ]
    }
    gil["processes"][1]["counted_s"] = 3.0
    row_gil = run_metrics({**summary, "gil": gil}, result)
    assert row_gil["gil_contention"] == 0.5 and row_gil["gil_source"] == "futex"
    assert row["python"] == "/py" and row["gil_enabled"] is True
    assert row["threads_poll_s"] == 1.5 and row["threads_socket_s"] == 0.5  # server's poll left out
    assert top_wait(row) == "poll 60%"
    assert top_wait({}) == ""


def test_run_metrics_failed_run() -> None:
    summary = {"wall_s": 0.3, "exit_code": 1, "processes": [_proc(10, 0.1, "x")], "threads": []}
    row = run_metrics(summary, None)
    assert not row["ok"]
    assert math.isnan(row["wall_s"])


def _run_row(workload: str, model: str, tasks: int, wall: float, ok: bool = True) -> dict:
    return {
        "workload": workload,
        "model": model,
        "tasks": tasks,
        "scale": 0.1,
        "ok": ok,
        "wall_s": wall,
        "run_wall_s": wall + 0.5,
        "cpu_s": 0.1,
        "parallelism": 0.1,
        "ctx_per_s": 100.0,
        "threads_peak": 1,
        "processes": 1,
        **{f"fds_{k}": 0 for k in FD_KINDS},
        "server_cpu_s": math.nan,
        "gil_contention": math.nan,
        "python": "/py",
        "gil_enabled": True,
    }


def test_aggregate_medians_spread_and_speedup() -> None:
    rows = [_run_row("io-sleep", "sequential", 2, w) for w in (0.70, 0.72, 0.80, 0.71)] + [
        _run_row("io-sleep", "threads", 2, w) for w in (0.40, 0.50, 0.41)
    ]
    rows.append(_run_row("io-sleep", "threads", 2, math.nan, ok=False))
    rows.append(_run_row("cpu-count", "threads", 2, 1.0))  # no sequential cell
    out = aggregate(pd.DataFrame(rows)).set_index(["workload", "model"])
    seq = out.loc[("io-sleep", "sequential")]
    assert seq["wall_s_median"] == pytest.approx(0.715)
    assert (seq["wall_s_min"], seq["wall_s_max"]) == (0.70, 0.80)
    assert seq["speedup_median"] == 1.0  # exactly, even with an even number of runs
    thr = out.loc[("io-sleep", "threads")]
    assert (thr["runs"], thr["runs_ok"]) == (4, 3)
    assert thr["speedup_median"] == pytest.approx(0.715 / 0.41)
    assert thr["speedup_min"] == pytest.approx(0.715 / 0.50)
    assert thr["speedup_max"] == pytest.approx(0.715 / 0.40)
    assert math.isnan(out.loc[("cpu-count", "threads"), "speedup_median"])
    assert out["gil_contention"].isna().all()
    # first-seen order of the cells is kept
    assert list(out.index.get_level_values("model")) == ["sequential", "threads", "threads"]


def test_parse_lists() -> None:
    valid = ("a", "b", "c")
    assert parse_names("all", valid, "model") == ["a", "b", "c"]
    assert parse_names("c, a,c", valid, "model") == ["c", "a"]
    with pytest.raises(CircuitError, match=r"unknown model 'x' \(valid: a, b, c, or all\)"):
        parse_names("a,x", valid, "model")
    assert parse_tasks("1,2,4,8") == [1, 2, 4, 8]
    for bad in ("0", "1,x", ""):
        with pytest.raises(CircuitError, match="--tasks"):
            parse_tasks(bad)


# ---------------------------------------------------------------- real bench


@pytest.mark.integration
def test_tiny_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "--workloads", "io-sleep", "--models", "sequential,threads"]
    argv += ["--tasks", "1,2", "--repeat", "1", "--scale", "0.05", "-q", "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "io-sleep" in printed and "speedup" in printed

    res = pd.read_parquet(out / "results.parquet")
    csv = pd.read_csv(out / "results.csv")
    assert list(csv.columns) == list(res.columns)
    for col in (
        "wall_s_median",
        "wall_s_min",
        "wall_s_max",
        "cpu_s_median",
        "parallelism_median",
        "speedup_median",
        "ctx_per_s_median",
        "fds_socket",
        "fds_epoll",
        "gil_contention",
        "python",
        "gil_enabled",
    ):
        assert col in res.columns
    assert len(res) == 4  # 2 models x 2 task counts
    seq = res[res["model"] == "sequential"]
    assert (seq["speedup_median"] == 1.0).all()
    thr = res[res["model"] == "threads"].set_index("tasks")
    # one task: nothing to overlap; two tasks of 0.2 s and 0.15 s: ~0.2 s instead of 0.35 s
    assert thr.loc[2, "speedup_median"] > 1.3
    # Sleeping threads do not fight for the GIL.  These runs last ~0.2 s (~20
    # samples at 100 Hz): one interval where both threads woke together weighs
    # 0.05-0.1 (0.072 seen in CI); CPU-bound threads are at ~0.5.
    assert (res["gil_contention"] < 0.15).all()
    assert (res["runs_ok"] == 1).all()

    info = json.loads((out / "bench.json").read_text())
    assert info["finished"] and info["failed_runs"] == 0
    assert info["matrix"]["tasks"] == [1, 2] and info["matrix"]["repeat"] == 1
    assert len(info["runs"]) == 4
    runs = pd.read_parquet(out / "runs.parquet")
    for r in info["runs"]:
        run = circuit.load(out / r["run"])  # every cell is a real, traced run folder
        assert run.meta["finalized"]
        assert run.meta["bench"]["model"] == r["model"]
    assert set(runs["python"]) == {res["python"].iloc[0]}

    # circuit report reads the per-run table (runs.*) and every run folder
    html = tmp_path / "report" / "bench.html"
    assert main(["report", str(out), "-o", str(html)]) == 0
    md = html.with_suffix(".md").read_text()
    assert "| results | 4 runs |" in md and "| run folders readable | 4 of 4 |" in md

    # an existing bench is kept unless --force
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--workloads", "io-sleep,video"], "unknown workload 'video'"),
        (["--models", "greenlets"], "unknown model 'greenlets'"),
        (["--workloads", ","], "no workload named in ','"),
        (["--tasks", "0"], "--tasks values must be at least 1"),
        (["--scale", "0"], "--scale must be"),
        (["--repeat", "0"], "--repeat must be at least 1"),
        (["--sweep", "cpu-count:threads"], "--sweep takes WORKLOADS:MODELS:N"),
        (["--sweep", "cpu-count:fibers:2"], "unknown model 'fibers'"),
    ],
)
def test_bench_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    assert main(["bench", *args, "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "b").exists()  # nothing started, nothing written


def test_demo_is_the_default_bench() -> None:
    from circuit.cli import build_parser
    from circuit.commands import bench, demo

    a = build_parser().parse_args(["demo"])
    assert a.func is demo.run  # the default bench, then its report
    assert a.output == Path("circuit-runs/demo")
    assert a.workloads == "io-sleep,io-http,cpu-count,cpu-hash"
    assert a.models == "sequential,threads,asyncio,processes"
    assert (a.tasks, a.repeat, a.scale) == ("2", 3, bench.DEFAULT_SCALE)


def test_a_failed_run_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An interpreter that runs nothing: the workload leaves no result.
    out = tmp_path / "b"
    argv = ["bench", "--workloads", "io-sleep", "--models", "sequential", "--tasks", "1"]
    argv += ["--repeat", "1", "--python", "/bin/true", "-o", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "run runs/io-sleep_sequential_t1_r1 failed (no result from the workload)" in err
    assert "1 failed" in err


def test_matrix_adds_sweep_cells_once_in_order() -> None:
    sweep = [Cell("cpu-count", "threads", n) for n in (1, 2, 4)]
    sweep += [Cell("cpu-hash", "threads", 4)]
    cells = matrix(["io-sleep", "cpu-count"], ["sequential", "threads"], [2], sweep)
    assert len(cells) == len(set(cells)) == 7  # (cpu-count, threads, 2) is in the grid
    assert cells == [
        Cell("io-sleep", "sequential", 2),
        Cell("io-sleep", "threads", 2),
        Cell("cpu-count", "threads", 1),
        Cell("cpu-count", "sequential", 2),
        Cell("cpu-count", "threads", 2),
        Cell("cpu-count", "threads", 4),
        Cell("cpu-hash", "threads", 4),
    ]


def test_parse_sweep() -> None:
    from circuit.commands.bench import parse_sweep
    from circuit.workloads import MODELS_ALL, WORKLOADS

    def p(*specs: str) -> list[tuple[str, str, int]]:
        return parse_sweep(list(specs), WORKLOADS, MODELS_ALL)

    assert p("cpu-count,cpu-hash:threads:1,2") == [
        ("cpu-count", "threads", 1),
        ("cpu-count", "threads", 2),
        ("cpu-hash", "threads", 1),
        ("cpu-hash", "threads", 2),
    ]
    assert p("cpu-count:threads:1", "cpu-count:threads:1,4") == [
        ("cpu-count", "threads", 1),
        ("cpu-count", "threads", 4),
    ]
    assert p("cpu-count:threads:1", "none") == []
    assert p("none", "io-sleep:all:2")[0] == ("io-sleep", "sequential", 2)
    for bad, says in (
        ("cpu-count:threads", "WORKLOADS:MODELS:N"),
        ("video:threads:1", "unknown workload 'video'"),
        ("cpu-count:fibers:1", "unknown model 'fibers'"),
        ("cpu-count:threads:0", "at least 1"),
    ):
        with pytest.raises(CircuitError, match=says):
            p(bad)


def test_demo_adds_the_thread_sweep_and_bench_does_not() -> None:
    from circuit.cli import build_parser
    from circuit.commands import bench

    demo = build_parser().parse_args(["demo"])
    assert demo.sweep is None
    assert demo.default_sweep == (bench.DEMO_SWEEP, bench.DEMO_LOOP_SWEEP)
    assert bench.DEMO_SWEEP == "cpu-count,cpu-hash:threads:1,2,4"
    assert bench.DEMO_LOOP_SWEEP == "io-blocked:asyncio:2"
    plain = build_parser().parse_args(["bench"])
    assert plain.sweep is None and plain.default_sweep is None
    off = build_parser().parse_args(["demo", "--sweep", "none"])
    assert off.sweep == ["none"]


@pytest.mark.integration
def test_bench_sweep_runs_its_cells(tmp_path: Path) -> None:
    out = tmp_path / "b"
    argv = ["bench", "--workloads", "io-sleep", "--models", "sequential", "--tasks", "2"]
    argv += ["--sweep", "io-sleep:threads:1,2", "--repeat", "1", "--scale", "0.02", "-q"]
    assert main([*argv, "-o", str(out)]) == 0
    info = json.loads((out / "bench.json").read_text())
    assert info["matrix"]["sweep"] == [["io-sleep", "threads", 1], ["io-sleep", "threads", 2]]
    ran = [(r["model"], r["tasks"]) for r in info["runs"]]
    assert ran == [("threads", 1), ("sequential", 2), ("threads", 2)]
    res = pd.read_parquet(out / "results.parquet").set_index(["model", "tasks"])
    assert res.loc[("threads", 2), "speedup_median"] > 1.3  # 0.08 s and 0.06 s overlapped
    assert math.isnan(res.loc[("threads", 1), "speedup_median"])  # no sequential at 1 task
