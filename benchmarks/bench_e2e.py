"""``circuit bench`` with its defaults, and ``circuit demo`` (``make demo``), end to end.

Times each whole command (``circuit bench``: 48 traced runs, the table, the
saved files; target under 2 minutes.  ``circuit demo``: those plus a 12-run
thread sweep and the report; target under 90 s) ``--repeats`` times, the two
commands interleaved; medians.

Usage: python benchmarks/bench_e2e.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine, machine_line, md_table, median, spread, tool, write_results

# command -> its target
COMMANDS = {"bench": "< 120 s", "demo": "< 90 s"}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--name", default="bench_e2e")
    a = ap.parse_args()
    m = machine()
    log(machine_line(m))
    walls: dict[str, list[float]] = {c: [] for c in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="circuit-bench-") as tmp:
        for i in range(a.repeats):
            for cmd in COMMANDS:
                out = Path(tmp) / f"{cmd}{i}"
                t0 = time.monotonic()
                p = subprocess.run(
                    [tool("circuit"), cmd, "-q", "-o", str(out)], capture_output=True, text=True
                )
                wall = time.monotonic() - t0
                if p.returncode != 0:
                    raise SystemExit(f"circuit {cmd} failed: {p.stderr.strip()[-800:]}")
                walls[cmd].append(wall)
                log(f"repeat {i + 1}: circuit {cmd} {wall:.1f} s")
    rows = []
    for cmd, w in walls.items():
        lo, hi = spread(w)
        rows.append(
            [
                f"circuit {cmd} (defaults)",
                f"{median(w):.1f}",
                f"{lo:.1f} .. {hi:.1f}",
                a.repeats,
                COMMANDS[cmd],
            ]
        )
    md = f"Machine: {machine_line(m)}\n\n" + md_table(
        ["command", "wall s (median)", "min..max", "repeats", "target"], rows
    )
    data = {"machine": m, "walls_s": walls, "median_s": {c: median(w) for c, w in walls.items()}}
    write_results(a.name, data, md)


if __name__ == "__main__":
    main()
