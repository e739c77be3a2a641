"""circuit bench: run workloads x models x tasks, trace every run, tabulate.

This module parses the options and prints; :mod:`circuit.bench` runs the bench.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
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
# The demo also shows a blocked event loop beside io-sleep's healthy one
# (docs/loops.md): three more ~0.7 s runs.
DEMO_LOOP_SWEEP = "io-blocked:asyncio:2"

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
    p: argparse.ArgumentParser,
    output: Path | None = None,
    sweep: str | tuple[str, ...] | None = None,
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
            f"none for no sweep; default {_specs_text(sweep)})"
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
        help="bench folder to write (default: "
        + (str(output) if output else "a new folder under ./circuit-runs/")
        + ")",
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


def _specs_text(sweep: str | tuple[str, ...] | None) -> str:
    if not sweep:
        return "none"
    return sweep if isinstance(sweep, str) else " and ".join(sweep)


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


# ------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from circuit.bench import BenchConfig, prepare, run_bench
    from circuit.workloads import MODELS_ALL, WORKLOADS, available_models, check

    workloads = parse_names(args.workloads, WORKLOADS, "workload")
    valid_models = MODELS_ALL if args.python else available_models()
    models = parse_names(args.models, valid_models, "model")
    tasks = parse_tasks(args.tasks)
    specs = getattr(args, "sweep", None)
    if specs is None:
        default = getattr(args, "default_sweep", None) or "none"
        specs = [default] if isinstance(default, str) else list(default)
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
    prepare(out, args.force)
    cfg = BenchConfig(
        workloads,
        models,
        tasks,
        args.repeat,
        args.scale,
        sweep=sweep,
        python=args.python,
        rate=args.rate,
        observers=lambda: pyspy_observers(args),
    )
    with _progress_bar(args.quiet) as bar:
        result = run_bench(out, cfg, _BarProgress(bar, out))
    render(result.results)
    failed = result.info["failed_runs"]
    print(
        f"circuit: bench saved in {out} ({len(result.runs)} runs in "
        f"{result.info['elapsed_s']:.0f} s"
        + (f", {failed} failed" if failed else "")
        + (", interrupted" if result.stopped else "")
        + ")",
        file=sys.stderr,
    )
    if result.stopped:
        return 130
    return 1 if failed else 0


def _progress_bar(quiet: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
    )


class _BarProgress:
    """The bench's progress on a rich progress bar; a failed run said as it ends."""

    def __init__(self, bar: Any, out: Path) -> None:
        self.bar = bar
        self.out = out
        self.task: Any = None

    def started(self, total: int) -> None:
        self.task = self.bar.add_task("bench", total=total)

    def run_started(self, name: str) -> None:
        self.bar.update(self.task, description=f"{name:<40}")

    def run_done(self, row: dict[str, Any]) -> None:
        self.bar.advance(self.task)
        if not row["ok"] and row.get("stop_reason") != "interrupted":
            why = (
                f"exit status {row['exit_code']}"
                if row["exit_code"] not in (None, 0)
                else "no result from the workload"
            )
            self.bar.console.print(
                f"circuit: run {row['run']} failed ({why}): see {self.out / row['run']}",
                markup=False,
                soft_wrap=True,
            )


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
