"""The bench engine: each cell of a workload x model x tasks matrix, run as
its own traced program several times, then tabulated.

A bench folder holds ``bench.json`` (the matrix and the runs so far,
rewritten as they finish), ``runs.parquet|csv`` (one row per run),
``results.parquet|csv`` (one row per cell) and ``runs/<cell>_r<k>/`` (the
run folders).  The rows and the per-cell table are computed by
:mod:`circuit.analysis.bench`, which also reads bench folders back for the
report; the tracer runs each workload (``python -m circuit.workloads``).
The command line (``circuit bench``, ``circuit demo``) parses its options
into a :class:`BenchConfig`, shows :class:`Progress` and prints the table.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from circuit.analysis.bench import BENCH_FILE, aggregate, run_metrics
from circuit.errors import CircuitError
from circuit.tracer.observers import Observer
from circuit.tracer.session import Options, run_command
from circuit.tracer.writer import write_json_atomic

RUNS_DIR = "runs"
RESULT_FILE = "workload.json"  # the workload's own record, in its run folder
# bench.json is a result to share, like the tables beside it (which pandas
# writes as the umask allows); run folders stay private (the tracer's 0600).
BENCH_FILE_MODE = 0o666


@dataclass(frozen=True)
class Cell:
    workload: str
    model: str
    tasks: int

    def run_name(self, repeat: int) -> str:
        """Folder name of one run of this cell (repeat counts from 1)."""
        return f"{self.workload}_{self.model}_t{self.tasks}_r{repeat}"


def matrix(
    workloads: list[str],
    models: list[str],
    tasks: list[int],
    extra: list[Cell] | None = None,
) -> list[Cell]:
    """Every workload x task count x model, plus the ``extra`` cells (a sweep),
    each once, grouped by workload, then task count, then model."""
    cells = [Cell(w, m, n) for w in workloads for n in tasks for m in models]
    cells += [c for c in extra or [] if c not in cells]
    cells = list(dict.fromkeys(cells))
    # First-seen order of the names: the order the user listed them in.
    wrank = {w: i for i, w in enumerate(dict.fromkeys(c.workload for c in cells))}
    mrank = {m: i for i, m in enumerate(dict.fromkeys(c.model for c in cells))}
    return sorted(cells, key=lambda c: (wrank[c.workload], c.tasks, mrank[c.model]))


def schedule(cells: list[Cell], repeat: int) -> list[tuple[Cell, int]]:
    """Every cell once, then every cell again...: repeats are interleaved so a
    slow minute on the machine hits all models alike, not one cell's repeats."""
    return [(c, r) for r in range(1, repeat + 1) for c in cells]


@dataclass
class BenchConfig:
    """What to run (names already checked) and how to trace each run."""

    workloads: list[str]
    models: list[str]
    tasks: list[int]
    repeat: int
    scale: float
    sweep: list[tuple[str, str, int]] = field(default_factory=list)  # extra cells
    python: str | None = None  # the workloads' interpreter; None: this one
    rate: float = 100.0
    # New observers (py-spy) for each run: an observer holds one run's state.
    observers: Callable[[], list[Observer]] = list


class Progress(Protocol):
    """What the caller is told as the bench goes (a progress bar, say)."""

    def started(self, total: int) -> None: ...

    def run_started(self, name: str) -> None: ...

    def run_done(self, row: dict[str, Any]) -> None: ...


@dataclass
class BenchResult:
    runs: pd.DataFrame  # one row per run
    results: pd.DataFrame  # one row per cell
    info: dict[str, Any]  # what bench.json holds
    stopped: bool  # interrupted: the tables hold the runs that finished


def prepare(out: Path, force: bool) -> None:
    """Make the bench folder; an earlier bench or demo in it is replaced only
    with ``force``, and nothing circuit did not write is ever deleted."""
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


def run_bench(out: Path, cfg: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Run every cell ``cfg.repeat`` times into ``out`` (made by :func:`prepare`)
    and save the tables.  A Ctrl-C between two runs, or a run interrupted,
    ends the bench early with what was measured."""
    sweep = cfg.sweep or []
    cells = matrix(cfg.workloads, cfg.models, cfg.tasks, [Cell(*c) for c in sweep])
    plan = schedule(cells, cfg.repeat)
    t0 = time.monotonic()
    info: dict[str, Any] = {
        "tool": "circuit bench",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "matrix": {
            "workloads": cfg.workloads,
            "models": cfg.models,
            "tasks": cfg.tasks,
            "sweep": [list(c) for c in sweep],
            "repeat": cfg.repeat,
            "scale": cfg.scale,
            "python": cfg.python or sys.executable,
            "rate_hz": cfg.rate,
        },
        "cells": len(cells),
        "order": "repeats interleaved: every cell once, then again",
        "runs": [],
        "finished": False,
    }
    write_json_atomic(out / BENCH_FILE, info, BENCH_FILE_MODE)
    rows: list[dict[str, Any]] = []
    stopped = False
    if progress:
        progress.started(len(plan))
    try:
        for cell, rep in plan:
            if progress:
                progress.run_started(cell.run_name(rep))
            row = run_one(out, cell, rep, cfg)
            rows.append(row)
            info["runs"].append(
                {k: row[k] for k in ("run", "workload", "model", "tasks", "repeat", "exit_code")}
            )
            if progress:
                progress.run_done(row)
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
    write_json_atomic(out / BENCH_FILE, info, BENCH_FILE_MODE)
    return BenchResult(runs, results, info, stopped)


def run_one(out: Path, cell: Cell, rep: int, cfg: BenchConfig) -> dict[str, Any]:
    """Trace one run of one cell; return its row of the runs table."""
    from circuit.analysis.run import load

    name = cell.run_name(rep)
    run_dir = out / RUNS_DIR / name
    result_file = run_dir / RESULT_FILE
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
        repr(cfg.scale),
        "--result",
        str(result_file),
    ]
    if cfg.python:
        cmd += ["--python", cfg.python]
    opts = Options(
        out=run_dir,
        rate=cfg.rate,
        force=True,
        quiet=True,
        observers=_quiet(cfg.observers()),  # failures go to each run's meta.json
        extra_meta={"bench": {"workload": cell.workload, "model": cell.model, "tasks": cell.tasks}},
    )
    _, meta = run_command(cmd, opts)
    result = None
    if result_file.exists():
        try:
            result = json.loads(result_file.read_text())
        except json.JSONDecodeError:
            result = None
    summary = load(run_dir).summary()
    return {
        "workload": cell.workload,
        "model": cell.model,
        "tasks": cell.tasks,
        "scale": cfg.scale,
        "repeat": rep,
        "run": f"{RUNS_DIR}/{name}",
        "stop_reason": meta.get("stop_reason"),
        **run_metrics(summary, result),
    }


def _quiet(observers: list[Observer]) -> list[Observer]:
    for o in observers:
        o.quiet = True  # type: ignore[attr-defined]
    return observers
