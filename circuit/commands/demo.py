"""circuit demo: the article's comparison (the default ``circuit bench`` plus a
thread-count sweep of the CPU workloads) and its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuit.commands import bench


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the article's comparison: the default circuit bench, a thread sweep, a report",
        description=(
            "Run the default `circuit bench` into circuit-runs/demo (io-sleep, io-http, "
            "cpu-count and cpu-hash under sequential, threads, asyncio and processes) plus a "
            f"thread sweep ({bench.DEMO_SWEEP}) and a blocked event loop "
            f"({bench.DEMO_LOOP_SWEEP}, beside io-sleep's healthy one), every run traced, "
            "then write its report: "
            "circuit-runs/demo/report.html and report.md. "
            "Takes every `circuit bench` option (--sweep none: the plain default bench)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=bench.EPILOG,
    )
    bench.add_bench_options(
        p, output=Path("circuit-runs/demo"), sweep=(bench.DEMO_SWEEP, bench.DEMO_LOOP_SWEEP)
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuit.analysis.report import write_report

    status = bench.run(args)
    if status == 0:
        html_path, md_path = write_report(args.output, args.output / "report.html")
        print(f"circuit: report written to {html_path} (Markdown: {md_path})")
    return status
