"""Shared helpers for the benchmarks: machine facts, interleaved pairs, output.

Every comparison runs its sides interleaved in one invocation (A B A B ...),
so slow drift on a shared machine (other jobs, thermal, page cache) hits all
sides alike; we report medians and the ratio pair by pair.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tables import machine_line, md_table, median, pct, render, spread

__all__ = [
    "RESULTS",
    "interleave",
    "log",
    "machine",
    "machine_line",
    "md_table",
    "median",
    "pct",
    "ratios",
    "spread",
    "tool",
    "write_results",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A console script from this interpreter's venv (circuit, py-spy, psrecord)."""
    p = VENV_BIN / name
    return str(p) if p.exists() else name


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "mem_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "loadavg_at_start": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def interleave(
    sides: dict[str, Callable[[], dict[str, float]]],
    pairs: int,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[dict[str, float]]]:
    """Run every side once per round, in the same order, ``pairs`` rounds."""
    out: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
    for i in range(pairs):
        for name, fn in sides.items():
            r = fn()
            out[name].append(r)
            if log:
                shown = ", ".join(f"{k}={v:.4g}" for k, v in r.items() if isinstance(v, float))
                log(f"round {i + 1}/{pairs} {name}: {shown}")
    return out


def ratios(runs: dict[str, list[dict[str, float]]], base: str, key: str) -> dict[str, list[float]]:
    """side -> [side[i][key] / base[i][key] for each round i] (pair by pair)."""
    b = [r[key] for r in runs[base]]
    return {
        name: [r[key] / b[i] if b[i] else float("nan") for i, r in enumerate(rs)]
        for name, rs in runs.items()
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``NAME.json`` and its tables, ``NAME.md``, rendered from it (tables.py)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    table = render(json.loads(path.read_text()))
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return path


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
