"""circuit report RUN_OR_BENCH [-o FILE]"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="an HTML report (and Markdown twin) explaining a run or bench with its own data",
        description=(
            "Write one self-contained HTML file (plots embedded, no external resources, "
            "works offline) and a Markdown twin with the same name and .md, its PNG plots "
            "written beside it. The report explains what the kernel did to the program's "
            "threads - sleeping, context switches, the GIL, the fd table, non-blocking "
            "sockets and epoll - next to the numbers measured in this run. A bench folder "
            "(from circuit bench: bench.json or results.parquet/.csv) gets the model "
            "comparison, scaling, GIL and sleep-state charts instead."
        ),
        epilog=(
            "examples:\n"
            "  circuit report runs/app                 -> runs/app-report.html + .md\n"
            "  circuit report runs/app -o out/app.html -> out/app.html, out/app.md, out/app-*.png\n"
            "  circuit report bench-out                -> the bench comparison"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target",
        type=Path,
        metavar="RUN_OR_BENCH",
        help="a run folder or bench folder, or a quoted glob of run folders ('runs/*': "
        "their comparison, as circuit compare -o writes it)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="HTML file to write, or a folder to write it in (default: "
        "RUN_OR_BENCH-report.html beside the folder)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import glob

    from circuit.analysis.report import write_report
    from circuit.errors import CircuitError

    if glob.has_magic(str(args.target)):
        return _many(args)
    if not args.target.exists():
        raise CircuitError(f"{args.target}: no such run or bench folder")
    try:
        html_path, md_path = write_report(args.target, args.output)
    except OSError as e:
        raise CircuitError(f"cannot write the report: {e}") from None
    print(f"circuit: report written to {html_path} (Markdown: {md_path})")
    return 0


def _many(args: argparse.Namespace) -> int:
    """The report of the runs a glob matches: their comparison."""
    from circuit.analysis.compare_load import compare_paths
    from circuit.analysis.many import run_folders
    from circuit.analysis.report.compare_sections import write_compare_report
    from circuit.errors import CircuitError

    folders = run_folders(str(args.target))
    out = args.output or Path("runs-report.html")
    if out.is_dir():
        out = out / "runs-report.html"
    try:
        html_path, md_path = write_compare_report(compare_paths(folders, None), out)
    except OSError as e:
        raise CircuitError(f"cannot write the report: {e}") from None
    print(f"circuit: report of {len(folders)} runs written to {html_path} (Markdown: {md_path})")
    return 0
