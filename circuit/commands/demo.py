"""circuit demo: the article's comparison, i.e. the default ``circuit bench``."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuit.commands import bench


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the article's comparison: the default circuit bench, into circuit-runs/demo",
        description=(
            "Same as `circuit bench -o circuit-runs/demo`: io-sleep, io-http and cpu-count "
            "under sequential, threads, asyncio and processes, each run traced. "
            "Takes every `circuit bench` option."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=bench.EPILOG,
    )
    bench.add_bench_options(p, output=Path("circuit-runs/demo"))
    p.set_defaults(func=bench.run)
