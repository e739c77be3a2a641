"""Shared helpers for the benchmarks: machine facts, interleaved pairs, output.

Every comparison runs its sides interleaved in one invocation (A B A B ...),
so slow drift on a shared machine (other jobs, thermal, page cache) hits all
sides alike; we report medians and the ratio pair by pair.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['cores']} cores ({m['cpu_model'] or 'unknown CPU'}), "
        f"{m['mem_bytes'] / 2**30:.1f} GiB, Linux {m['kernel']}, "
        f"{m['implementation']} {m['python']}, load average at start "
        f"{m['loadavg_at_start'][0]:.2f}"
    )


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float]) -> tuple[float, float]:
    return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))


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


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any], table: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return path


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(r: float) -> str:
    """A ratio as a signed percentage: 1.013 -> +1.3%."""
    return f"{(r - 1) * 100:+.1f}%"
