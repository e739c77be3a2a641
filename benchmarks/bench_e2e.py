"""``circuit bench`` with its defaults, end to end (target: under 2 minutes).

Times the whole command (36 traced runs by default, the table, the saved
files) ``--repeats`` times; nothing to interleave with, so medians only.

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
from _common import log, machine, machine_line, median, tool, write_results


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--name", default="bench_e2e")
    a = ap.parse_args()
    m = machine()
    log(machine_line(m))
    walls: list[float] = []
    with tempfile.TemporaryDirectory(prefix="circuit-bench-") as tmp:
        for i in range(a.repeats):
            out = Path(tmp) / f"b{i}"
            t0 = time.monotonic()
            p = subprocess.run(
                [tool("circuit"), "bench", "-o", str(out)], capture_output=True, text=True
            )
            wall = time.monotonic() - t0
            if p.returncode != 0:
                raise SystemExit(f"circuit bench failed: {p.stderr.strip()[-800:]}")
            walls.append(wall)
            log(f"repeat {i + 1}: {wall:.1f} s")
    write_results(
        a.name,
        {"benchmark": "bench_e2e", "machine": m, "walls_s": walls, "median_s": median(walls)},
    )


if __name__ == "__main__":
    main()
