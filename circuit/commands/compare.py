"""circuit compare RUN_A RUN_B [RUN ...] [--labels A,B] [-o FILE] [--json]"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Put two or more runs of your program side by side (or two or more bench
folders, cell by cell: cells matched on workload, model and tasks, each the
median of its repeats). The first run is the baseline: every figure of the
others is given as a ratio to it (times, counts, rates) or a difference
(shares, GIL contention). What changed most is called out first, ranked by
the rule in docs/compare.md. Figures are those of each run's own
`circuit summary --json`, or sums of them over its threads or processes.
Runs of different commands or machines are allowed: how their meta.json
differs is listed.
"""

EPILOG = """\
examples:
  circuit compare runs/threads runs/asyncio
  circuit compare before after --labels old,new
  circuit compare before after -o cmp.html      also an HTML report (+ cmp.md)
  circuit compare before after --json           the same figures, machine-readable
  circuit compare bench-a bench-b               two benches, cell by cell
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="runs (or benches) side by side: waits, GIL, fds, loops, findings; what changed most",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "targets",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="run folders, bench folders, or glob patterns of run folders (quote them: 'runs/*')",
    )
    p.add_argument(
        "--labels",
        default=None,
        metavar="A,B,...",
        help="one name per run, comma-separated (default: the folder names)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write an HTML report to FILE (and a Markdown twin FILE.md)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuit.analysis.compare_load import compare_paths, to_json
    from circuit.errors import CircuitError

    cmp = compare_paths(_expand(args.targets), args.labels)
    if args.json:
        json.dump(to_json(cmp), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(cmp)
    if args.output is not None:
        from circuit.analysis.report.compare_sections import write_compare_report

        try:
            html_path, md_path = write_compare_report(cmp, args.output)
        except OSError as e:
            raise CircuitError(f"cannot write the report: {e}") from None
        print(f"circuit: report written to {html_path} (Markdown: {md_path})", file=sys.stderr)
    return 0


def _expand(targets: list[Path]) -> list[Path]:
    """Each target as given, a glob pattern as the run folders it matches."""
    import glob

    from circuit.analysis.many import run_folders

    out: list[Path] = []
    for t in targets:
        out += run_folders(str(t)) if glob.has_magic(str(t)) else [t]
    return out


def render(cmp: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape

    con = Console()
    if cmp["kind"] == "runs":
        _render_one(con, cmp)
        return
    for d in cmp["bench_differences"]:
        vals = ", ".join(f"{k}: {v}" for k, v in d["values"].items())
        con.print(f"benches differ in {escape(d['field'])}: {escape(vals)}")
    for u in cmp["unmatched"]:
        cell = " ".join(f"{k}={v}" for k, v in u["cell"].items())
        con.print(
            f"[yellow]not compared:[/yellow] {escape(cell)} is only in {escape(', '.join(u['in']))}"
        )
    for cell in cmp["cells"]:
        con.rule(escape(cell["name"]))
        _render_one(con, cell)


def _render_one(con: Any, cmp: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from circuit.analysis import compare as C

    labels = cmp["labels"]
    base = labels[0]
    con.print("[bold]What changed most[/bold] (docs/compare.md):")
    for h in cmp["headlines"]:
        con.print("  " + escape(h))
    for d in cmp["meta_differences"]:
        vals = "; ".join(f"{k}: {_short(v)}" for k, v in d["values"].items())
        con.print(f"  runs differ in {escape(d['field'])}: {escape(vals)}")
    t = Table(title="side by side", title_justify="left")
    for c in ("", "unit", *labels, *[C.vs_column(lab, base) for lab in labels[1:]]):
        t.add_column(escape(c), justify="left" if c in ("", "unit") else "right")
    group = None
    for r in cmp["table"].to_dict("records"):
        if r["group"] != group:
            group = r["group"]
            t.add_row(f"[bold]{group}[/bold]", *[""] * (len(t.columns) - 1))
        vals = [
            C.value_text(r[lab], r["unit"], r["group"] not in cmp["not_recorded"][lab])
            for lab in labels
        ]
        vs = [
            C.vs_text(r[C.vs_column(lab, base)], r[base], r[lab], r["compared"])
            for lab in labels[1:]
        ]
        t.add_row("  " + escape(r["label"]), r["unit"], *vals, *vs)
    con.print(t)
    _render_findings(con, cmp)
    fn = cmp["functions"]
    if fn is not None:
        ft = Table(
            title="Python functions whose sampled wait time changed most", title_justify="left"
        )
        cols = [c for c in fn.columns if c not in ("function", "change_s")]
        for c in ("function", *cols, "change"):
            ft.add_column(escape(c))
        for r in fn.to_dict("records"):
            ft.add_row(
                escape(r["function"]), *[f"{r[c]:.3f}" for c in cols], f"{r['change_s']:+.3f}"
            )
        con.print(ft)


def _render_findings(con: Any, cmp: dict[str, Any]) -> None:
    from rich.markup import escape

    from circuit.analysis import compare as C

    labels = cmp["labels"]
    if not any(cmp["findings_recorded"].values()):
        con.print("findings: not recorded")
        return
    changed = C.changed_findings(cmp["findings"])
    con.print(f"findings: {len(changed)} changed of {len(cmp['findings'])} kinds")
    for e in changed:
        st = ", ".join(f"{lab}: {e['status'][lab]}" for lab in labels[1:])
        con.print(f"  {escape(e['kind'])} ({escape(str(e['title']))}): {escape(st)}")


def _short(v: Any, n: int = 200) -> str:
    s = " ".join(v) if isinstance(v, list) else str(v)
    return s if len(s) <= n else s[: n - 1] + "…"
