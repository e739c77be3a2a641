"""circuit demo: the article's comparison (the default ``circuit bench`` plus a
thread-count sweep of the CPU workloads) and its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuit.commands import bench

EPILOG = f"""\
what it writes (in DIR, default circuit-runs/demo):
  report.html, report.md   the comparison explained: models side by side (wall vs
                           CPU), scaling with threads, sleep states, the GIL, epoll
  bench.json, results.*    the matrix and one row per cell, as circuit bench writes
  runs/<cell>_r<k>/        one run folder per run: circuit summary / report / export

the matrix: workloads {", ".join(bench.DEFAULT_WORKLOADS)}
under models {", ".join(bench.DEFAULT_MODELS)};
{",".join(map(str, bench.DEFAULT_TASKS))} tasks, {bench.DEFAULT_REPEAT} repeats, scale \
{bench.DEFAULT_SCALE:g}; plus a thread sweep ({bench.DEMO_SWEEP}).
Every option above narrows or widens it as the same option of circuit bench does.

examples:
  circuit demo                               the whole comparison and its report
  circuit demo --workloads cpu-count --repeat 1   a quick look at one workload
  circuit demo --sweep none -o /tmp/demo     no sweep, somewhere else
  circuit summary circuit-runs/demo/runs/<cell>_r1   one run of it, in the terminal
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the article's comparison: the default circuit bench, a thread sweep, a report",
        description=(
            "circuit demo: run the article's comparison and explain it. It benchmarks\n"
            "threads vs asyncio vs processes on I/O-bound and CPU-bound workloads, every\n"
            "run traced, and writes one report that compares them: which model used how\n"
            "much wall and CPU time, how they scale with threads, where the threads slept,\n"
            "what the GIL cost, and what a blocked event loop costs next to a healthy one.\n"
            "(circuit bench runs a matrix you choose and prints its table; demo is its\n"
            "default matrix, a thread sweep, a blocked-loop sweep and the report.)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
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
