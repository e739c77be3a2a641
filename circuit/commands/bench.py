"""circuit bench: run workloads x models x tasks, trace every run, tabulate."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from circuit.commands import default_run_dir
from circuit.errors import CircuitError
from circuit.tracer.pyspy_options import add_pyspy_options, pyspy_observers

DEFAULT_WORKLOADS = ("io-sleep", "io-http", "cpu-count", "cpu-hash")
DEFAULT_MODELS = ("sequential", "threads", "asyncio", "processes")
DEFAULT_TASKS = (2,)
DEFAULT_REPEAT = 3
# 0.1: the article's 4 s and 3 s calls become 0.4 s and 0.3 s, its count
# 10,000,000 per task and cpu-hash 410 MiB per task (each ~0.25 s on a 2020s
# core).  The default bench is then 48 traced runs, under a minute on 2 cores.
DEFAULT_SCALE = 0.1
# `circuit demo` adds these cells: the CPU workloads under threads at 1, 2 and
# 4 tasks, so its scaling and GIL sections have lines, not points.  On 2 cores
# counting threads take N times as long as one, hashing threads do not.
DEMO_SWEEP = "cpu-count,cpu-hash:threads:1,2,4"
BENCH_FILE = "bench.json"
RUNS_DIR = "runs"

DESCRIPTION = """\
Run every workload under every model (and every number of tasks), each as
its own traced program, several times; print and save one table: per cell
the median and spread of wall time, CPU time, parallelism, speedup vs
sequential, context switches per second, peak fds by kind.

Without options: the article's comparison (io-sleep, io-http, cpu-count and
cpu-hash under sequential, threads, asyncio, processes; 2 tasks; 3 repeats;
scale 0.1).  --sweep adds cells outside that grid, e.g. one model at several
task counts.
"""

EPILOG = """\
columns (medians over the repeats):
  wall s     the workload's own clock around its tasks; min-max: fastest, slowest run
  speedup    sequential's median wall / this cell's (same workload and tasks)
  CPU s      CPU seconds of the workload's processes over the whole traced run
  par        parallelism: those CPU seconds per wall second of the traced run
  ctx/s      voluntary + involuntary context switches per second
  threads    peak threads of the workload's main process; procs: its processes
  sockets, epoll   peak open fds of that kind, summed over the workload's processes
  threads mostly   running or the wait reason the workload's threads spent most time in
  The io-http server is its own process in the traced tree, left out of these
  columns (its CPU is server_cpu_s in the saved table).  gil_contention in the
  saved table: the share of the time of the workload's threads that ran Python
  spent waiting for the GIL (docs/pyspy.md); gil_source: what it rests on.

saved in DIR: bench.json (the matrix), results.parquet/.csv (one row per
cell), runs.parquet/.csv (one row per run), runs/<cell>_r<k>/ (run folders).

examples:
  circuit bench                                     the article's comparison
  circuit bench --workloads cpu-count --models all --tasks 1,2,4,8 --repeat 5
  circuit bench --sweep cpu-count,cpu-hash:threads:1,2,4,8   the grid plus a thread sweep
  circuit bench --workloads io-http --models asyncio,threads --tasks 1,8,64
  circuit bench --python /usr/bin/python3.13t --workloads cpu-count
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run workloads under every concurrency model, traced; one results table",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bench_options(p)
    p.set_defaults(func=run)


def add_bench_options(
    p: argparse.ArgumentParser, output: Path | None = None, sweep: str | None = None
) -> None:
    p.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        metavar="LIST",
        help=f"comma-separated, or all (default {','.join(DEFAULT_WORKLOADS)})",
    )
    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        metavar="LIST",
        help=f"comma-separated, or all (default {','.join(DEFAULT_MODELS)})",
    )
    p.add_argument(
        "--tasks",
        default=",".join(map(str, DEFAULT_TASKS)),
        metavar="N[,N...]",
        help="tasks per run; several values make a scaling sweep (default 2)",
    )
    p.add_argument(
        "--sweep",
        action="append",
        default=None,
        metavar="WORKLOADS:MODELS:N[,N...]",
        help=(
            "also run these cells, e.g. cpu-count,cpu-hash:threads:1,2,4 (repeatable; "
            f"none for no sweep; default {sweep or 'none'})"
        ),
    )
    p.set_defaults(default_sweep=sweep)
    p.add_argument(
        "--repeat", type=int, default=DEFAULT_REPEAT, metavar="R", help="runs per cell (default 3)"
    )
    p.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE,
        metavar="S",
        help=f"workload scale: durations and counts times S (default {DEFAULT_SCALE:g})",
    )
    p.add_argument(
        "--python", default=None, metavar="PATH", help="run the workloads under this interpreter"
    )
    p.add_argument(
        "--rate", type=float, default=100.0, metavar="HZ", help="samples per second (default 100)"
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=output,
        metavar="DIR",
        help="bench folder to write (default: a new folder under ./circuit-runs/)",
    )
    p.add_argument("--force", action="store_true", help="replace DIR if it holds an earlier bench")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    # No periodic dumps by default: they would perturb the timings compared.
    add_pyspy_options(p, interval=0.0)


# ------------------------------------------------------------------ input


def parse_names(text: str, valid: tuple[str, ...], what: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if names == ["all"]:
        return list(valid)
    if not names:
        raise CircuitError(f"no {what} named in {text!r} (valid: {', '.join(valid)}, or all)")
    bad = [x for x in names if x not in valid]
    if bad:
        raise CircuitError(f"unknown {what} {bad[0]!r} (valid: {', '.join(valid)}, or all)")
    return list(dict.fromkeys(names))


def parse_tasks(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CircuitError(f"--tasks takes numbers like 1,2,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise CircuitError(f"--tasks values must be at least 1, got {text!r}")
    return list(dict.fromkeys(values))


def parse_sweep(
    specs: list[str], workloads: tuple[str, ...], models: tuple[str, ...]
) -> list[tuple[str, str, int]]:
    """(workload, model, tasks) of each ``WORKLOADS:MODELS:N[,N...]`` spec; ``none`` clears."""
    cells: list[tuple[str, str, int]] = []
    for spec in specs:
        if spec.strip() == "none":
            cells = []
            continue
        parts = spec.split(":")
        if len(parts) != 3:
            raise CircuitError(
                f"--sweep takes WORKLOADS:MODELS:N[,N...] (e.g. {DEMO_SWEEP}), got {spec!r}"
            )
        ws = parse_names(parts[0], workloads, "workload")
        ms = parse_names(parts[1], models, "model")
        cells += [(w, m, n) for w in ws for m in ms for n in parse_tasks(parts[2])]
    return list(dict.fromkeys(cells))


def _prepare(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise CircuitError(
                f"{out} already exists; use --force to replace it or pick another -o"
            )
        if not _replaceable(out):
            raise CircuitError(
                f"{out} is not a folder circuit wrote (no {BENCH_FILE} or run folders); "
                "not deleting it: pick another -o"
            )
        shutil.rmtree(out)
    try:
        (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CircuitError(f"cannot create {out}: {e.strerror}") from None


def _replaceable(out: Path) -> bool:
    if not out.is_dir():
        return False
    if (out / BENCH_FILE).exists():
        return True
    # an earlier `circuit demo`: one run folder per model
    kids = list(out.iterdir())
    return bool(kids) and all((k / "meta.json").exists() for k in kids)


# ------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from circuit.workloads import MODELS_ALL, WORKLOADS, available_models, check

    workloads = parse_names(args.workloads, WORKLOADS, "workload")
    valid_models = MODELS_ALL if args.python else available_models()
    models = parse_names(args.models, valid_models, "model")
    tasks = parse_tasks(args.tasks)
    specs = getattr(args, "sweep", None)
    if specs is None:
        specs = [getattr(args, "default_sweep", None) or "none"]
    sweep = parse_sweep(specs, WORKLOADS, valid_models)
    if args.repeat < 1:
        raise CircuitError(f"--repeat must be at least 1, got {args.repeat}")
    msg = check(workloads[0], "sequential", tasks[0], args.scale)  # names checked above
    if msg:
        raise CircuitError(msg)
    if not 0 < args.rate <= 10_000:
        raise CircuitError(f"--rate must be between 0 and 10000 Hz, got {args.rate:g}")
    if args.python and not shutil.which(args.python):
        raise CircuitError(f"--python: no such interpreter: {args.python}")
    out = args.output or default_run_dir("bench")
    _prepare(out, args.force)
    return bench(
        out, workloads, models, tasks, args.repeat, args.scale, args, quiet=args.quiet, sweep=sweep
    )


def bench(
    out: Path,
    workloads: list[str],
    models: list[str],
    tasks: list[int],
    repeat: int,
    scale: float,
    args: argparse.Namespace,
    quiet: bool = False,
    sweep: list[tuple[str, str, int]] | None = None,
) -> int:
    import pandas as pd
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from circuit.analysis.bench import Cell, aggregate, matrix, schedule

    cells = matrix(workloads, models, tasks, [Cell(*c) for c in sweep or []])
    plan = schedule(cells, repeat)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()
    info: dict[str, Any] = {
        "tool": "circuit bench",
        "started": started,
        "matrix": {
            "workloads": workloads,
            "models": models,
            "tasks": tasks,
            "sweep": [list(c) for c in sweep or []],
            "repeat": repeat,
            "scale": scale,
            "python": args.python or sys.executable,
            "rate_hz": args.rate,
        },
        "cells": len(cells),
        "order": "repeats interleaved: every cell once, then again",
        "runs": [],
        "finished": False,
    }
    _write_json(out / BENCH_FILE, info)
    rows: list[dict[str, Any]] = []
    stopped = False
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    ) as progress:
        bar = progress.add_task("bench", total=len(plan))
        try:
            for cell, rep in plan:
                name = cell.run_name(rep)
                progress.update(bar, description=f"{name:<40}")
                row = run_one(out, cell, rep, scale, args)
                rows.append(row)
                info["runs"].append(
                    {
                        k: row[k]
                        for k in ("run", "workload", "model", "tasks", "repeat", "exit_code")
                    }
                )
                progress.advance(bar)
                if not row["ok"] and row.get("stop_reason") != "interrupted":
                    why = (
                        f"exit status {row['exit_code']}"
                        if row["exit_code"] not in (None, 0)
                        else "no result from the workload"
                    )
                    progress.console.print(
                        f"circuit: run {row['run']} failed ({why}): see {out / row['run']}",
                        markup=False,
                        soft_wrap=True,
                    )
                if row.get("stop_reason") == "interrupted":
                    stopped = True
                    break
        except KeyboardInterrupt:  # between two runs: keep what was measured
            stopped = True
    if not rows:
        raise CircuitError("interrupted before the first run finished: no results")
    runs = pd.DataFrame(rows)
    results = aggregate(runs)
    runs.to_parquet(out / "runs.parquet", index=False)
    runs.to_csv(out / "runs.csv", index=False)
    results.to_parquet(out / "results.parquet", index=False)
    results.to_csv(out / "results.csv", index=False)
    info.update(
        finished=not stopped,
        elapsed_s=round(time.monotonic() - t0, 3),
        ended=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        failed_runs=int((~runs["ok"].astype(bool)).sum()),
        tables={"results": "results.parquet", "runs": "runs.parquet"},
    )
    _write_json(out / BENCH_FILE, info)
    render(results)
    failed = info["failed_runs"]
    print(
        f"circuit: bench saved in {out} ({len(rows)} runs in {info['elapsed_s']:.0f} s"
        + (f", {failed} failed" if failed else "")
        + (", interrupted" if stopped else "")
        + ")",
        file=sys.stderr,
    )
    if stopped:
        return 130
    return 1 if failed else 0


def run_one(
    out: Path, cell: Any, rep: int, scale: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Trace one run of one cell; return its row of the runs table."""
    import circuit
    from circuit.analysis.bench import run_metrics
    from circuit.tracer.session import Options, run_command

    name = cell.run_name(rep)
    run_dir = out / RUNS_DIR / name
    result_file = run_dir / "workload.json"
    cmd = [
        sys.executable,
        "-m",
        "circuit.workloads",
        cell.workload,
        "--model",
        cell.model,
        "--tasks",
        str(cell.tasks),
        "--scale",
        repr(scale),
        "--result",
        str(result_file),
    ]
    if args.python:
        cmd += ["--python", args.python]
    opts = Options(
        out=run_dir,
        rate=args.rate,
        force=True,
        quiet=True,
        observers=_quiet(pyspy_observers(args)),  # failures go to each run's meta.json
        extra_meta={"bench": {"workload": cell.workload, "model": cell.model, "tasks": cell.tasks}},
    )
    _, meta = run_command(cmd, opts)
    result = None
    if result_file.exists():
        try:
            result = json.loads(result_file.read_text())
        except json.JSONDecodeError:
            result = None
    summary = circuit.load(run_dir).summary()
    return {
        "workload": cell.workload,
        "model": cell.model,
        "tasks": cell.tasks,
        "scale": scale,
        "repeat": rep,
        "run": f"{RUNS_DIR}/{name}",
        "stop_reason": meta.get("stop_reason"),
        **run_metrics(summary, result),
    }


def _quiet(observers: list) -> list:
    for o in observers:
        o.quiet = True
    return observers


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _num(x: Any, fmt: str) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(v) else format(v, fmt)


def render(results: Any) -> None:
    """The results table, one row per cell."""
    from rich.console import Console
    from rich.table import Table

    from circuit.analysis.bench import top_wait

    con = Console()
    if not con.is_terminal:
        con = Console(width=max(con.width, 160))  # a pipe or a file: do not wrap rows
    t = Table(title="circuit bench (medians; wall min-max over the repeats)", title_justify="left")
    for c in ("workload", "model"):
        t.add_column(c, no_wrap=True)
    for c in ("tasks", "wall s", "min-max", "speedup", "CPU s", "par", "ctx/s"):
        t.add_column(c, justify="right", no_wrap=True)
    for c in ("threads", "procs", "sockets", "epoll"):
        t.add_column(c, justify="right", no_wrap=True)
    t.add_column("threads mostly", no_wrap=True)
    for r in results.to_dict("records"):
        spread = f"{_num(r['wall_s_min'], '.2f')}-{_num(r['wall_s_max'], '.2f')}"
        if r["runs_ok"] == 0:
            spread = "-"
        if r["runs_ok"] < r["runs"]:
            spread += f" ({r['runs'] - r['runs_ok']} failed)"
        speedup = _num(r["speedup_median"], ".2f")
        t.add_row(
            r["workload"],
            r["model"],
            str(r["tasks"]),
            _num(r["wall_s_median"], ".3f"),
            spread,
            speedup + ("x" if speedup != "-" else ""),
            _num(r["cpu_s_median"], ".2f"),
            _num(r["parallelism_median"], ".2f"),
            _num(r["ctx_per_s_median"], ".0f"),
            _num(r["threads_peak"], ".0f"),
            _num(r["processes"], ".0f"),
            _num(r["fds_socket"], ".0f"),
            _num(r["fds_epoll"], ".0f"),
            top_wait(r),
        )
    con.print(t)
