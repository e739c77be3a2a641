"""circuit export RUN --format perfetto|chrome|csv [-o FILE]"""

from __future__ import annotations

import argparse
from pathlib import Path

SUFFIX = {"perfetto": ".trace.json", "chrome": ".trace.json", "csv": ".csv.zip"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run as Perfetto/Chrome trace JSON or CSV tables",
        description=(
            "Export a run folder for other tools.\n\n"
            "  perfetto, chrome  Chrome Trace Event JSON (the same file for both): one slice\n"
            "                    per thread state interval, named by wait reason (running,\n"
            "                    sleep, lock, gil, poll, socket, ...), marks as instants, CPU\n"
            "                    (cores) and open fds by kind as counters, and a GIL holder\n"
            "                    track where the interpreter's GIL state was read. Open it at\n"
            "                    https://ui.perfetto.dev (Open trace file) or chrome://tracing.\n"
            "  csv               a zip of CSV files, one per table: threads.csv (raw samples),\n"
            "                    intervals.csv (merged states with start/end ns), processes.csv,\n"
            "                    fds.csv, procs.csv, gil.csv, marks.csv - for spreadsheets and\n"
            "                    scripts."
        ),
        epilog=(
            "examples:\n"
            "  circuit export runs/app --format perfetto       -> runs/app.trace.json\n"
            "  circuit export runs/app --format csv -o app.zip"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder written by circuit run")
    p.add_argument(
        "--format",
        "-f",
        choices=("perfetto", "chrome", "csv"),
        default="perfetto",
        help="output format (default: perfetto)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="file to write (default: beside RUN, RUN.trace.json or RUN.csv.zip)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuit.analysis.export import write_chrome_trace, write_csv_zip
    from circuit.commands import load_run
    from circuit.errors import CircuitError

    r = load_run(args.run)
    out = args.output or args.run.with_name(args.run.name + SUFFIX[args.format])
    try:
        if args.format == "csv":
            write_csv_zip(r, out)
        else:
            write_chrome_trace(r, out)
    except OSError as e:
        raise CircuitError(f"cannot write {out}: {e}") from None
    print(f"circuit: {args.format} export written to {out}")
    return 0
