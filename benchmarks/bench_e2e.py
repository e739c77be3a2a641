"""``circuit bench`` and ``circuit demo`` with their defaults, end to end
(targets: under 2 minutes, and ``make demo`` under 90 s).

Times each whole command (the traced runs, the table, the saved files; the
demo's report too) ``--repeats`` times, alternating; nothing to interleave
with, so medians only.

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
    walls: dict[str, list[float]] = {"bench": [], "demo": []}
    with tempfile.TemporaryDirectory(prefix="circuit-bench-") as tmp:
        for i in range(a.repeats):
            for cmd, w in walls.items():
                out = Path(tmp) / f"{cmd}{i}"
                t0 = time.monotonic()
                p = subprocess.run(
                    [tool("circuit"), cmd, "-o", str(out)], capture_output=True, text=True
                )
                wall = time.monotonic() - t0
                if p.returncode != 0:
                    raise SystemExit(f"circuit {cmd} failed: {p.stderr.strip()[-800:]}")
                w.append(wall)
                log(f"repeat {i + 1}: circuit {cmd} {wall:.1f} s")
    write_results(
        a.name,
        {
            "benchmark": "bench_e2e",
            "machine": m,
            "walls_s": walls["bench"],
            "median_s": median(walls["bench"]),
            "demo_walls_s": walls["demo"],
            "demo_median_s": median(walls["demo"]),
        },
    )


if __name__ == "__main__":
    main()
