"""The comparison report (``circuit compare -o FILE``): runs side by side.

Built from :func:`circuit.analysis.compare_load.compare_paths`' result into
the report's document model, so the HTML page and its Markdown twin escape
and render it as the run and bench reports are.  Files are written
owner-only (0600): a comparison quotes the runs' command lines and paths,
which their run folders keep private.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import compare as C
from .model import Document, Figure, Section, Table, V

FILE_MODE = 0o600


def _table_rows(cmp: dict[str, Any]) -> Table:
    labels = cmp["labels"]
    base = labels[0]
    header = ["group", "figure", "unit", *labels, *[C.vs_column(lab, base) for lab in labels[1:]]]
    rows = []
    for r in cmp["table"].to_dict("records"):
        cells: list[Any] = [r["group"], r["label"], r["unit"]]
        for lab in labels:
            rec = r["group"] not in cmp["not_recorded"][lab]
            cells.append(C.value_text(r[lab], r["unit"], rec))
        for lab in labels[1:]:
            cells.append(C.vs_text(r[C.vs_column(lab, base)], r[base], r[lab], r["compared"]))
        rows.append(cells)
    return Table(header, rows)


def _findings(sec: Section, cmp: dict[str, Any]) -> None:
    labels = cmp["labels"]
    if not any(cmp["findings_recorded"].values()):
        sec.missing("findings (these runs' summaries do not record them).")
        return
    if not cmp["findings"]:
        sec.say("No finding in any run.")
        return
    changed = C.changed_findings(cmp["findings"])
    sec.say(
        V(len(changed)),
        f" of {len(cmp['findings'])} finding kinds changed against ",
        V(labels[0]),
        ".",
    )
    rows = []
    for e in cmp["findings"]:
        cells: list[Any] = [V(e["kind"], code=True), e["title"]]
        for lab in labels:
            r = e["runs"][lab]
            cells.append(
                r if isinstance(r, str) else "-" if r is None else f"{r['severity']} x{r['count']}"
            )
        cells += [e["status"][lab] for lab in labels[1:]]
        rows.append(cells)
    status = [f"{lab} vs {labels[0]}" for lab in labels[1:]]
    sec.body.append(Table(["kind", "title", *labels, *status], rows))


def _functions(sec: Section, cmp: dict[str, Any]) -> None:
    fn = cmp["functions"]
    if fn is None:
        sec.missing(
            "py-spy stacks in the first run and another (record them with "
            "`circuit run --dump-interval 0.5`)."
        )
        return
    labels = [c for c in fn.columns if c not in ("function", "change_s")]
    rows = [
        [V(r["function"], code=True), *[f"{r[lab]:.3f}" for lab in labels], f"{r['change_s']:+.3f}"]
        for r in fn.to_dict("records")
    ]
    sec.body.append(Table(["function", *[f"{lab} (thread-s)" for lab in labels], "change"], rows))


def _comparison_sections(cmp: dict[str, Any], prefix: str, runs: bool) -> list[Section]:
    from ..plots import compare as P

    labels = cmp["labels"]
    changed = Section(
        f"{prefix}changed",
        "What changed most",
        [
            "Each change scores between 0 and 1: wait reasons by the thread-seconds that moved "
            "over the larger run's total thread time, shares (GIL contention, loop busy share) "
            "by their difference, quantities (wall, CPU, threads, fds...) by 1 - smaller/larger, "
            "findings by severity. The largest come first; under 0.05 nothing is called out."
        ],
    )
    for h in cmp["headlines"]:
        changed.say(V(h))
    if cmp["different_commands"] or cmp["different_machines"]:
        what = " and ".join(
            w
            for w, on in (
                ("different commands", cmp["different_commands"]),
                ("different machines", cmp["different_machines"]),
            )
            if on
        )
        changed.say(f"These runs are of {what}: see the runs' differences below.")
    table = Section(
        f"{prefix}table",
        "Side by side",
        [
            "Every figure is one of the run's own `circuit summary --json` or a sum of them "
            "over its threads or processes. Times, counts and rates are given as a ratio to "
            "the first run (x1.00: the same), shares as a difference (+0.10: ten points more)."
        ],
    )
    table.body.append(_table_rows(cmp))
    waits = Section(f"{prefix}waits", "Where thread time went")
    figs = [s.figures for s in cmp["sides"]]
    waits.body.append(
        Figure(
            f"{prefix}waits", P.wait_bars(figs, labels), "thread-seconds by wait reason, per run"
        )
    )
    out = [changed, table, waits]
    if runs:
        tl = Section(f"{prefix}timelines", "CPU and open fds over time")
        tl.body.append(
            Figure(
                f"{prefix}timelines",
                P.timelines([s.runs[0] for s in cmp["sides"]], labels),
                "CPU (cores) and open fds of all processes, each run from its own start",
            )
        )
        out.append(tl)
    fsec = Section(f"{prefix}findings", "Findings: appeared, disappeared, changed")
    _findings(fsec, cmp)
    loops = Section(f"{prefix}loops", "Event loops")
    missing = [lab for lab in labels if "loops" in cmp["not_recorded"][lab]]
    if missing:
        loops.say("Event loops not recorded in: ", V(", ".join(missing)), ".")
    else:
        loops.say("Busy share, longest stall and stalls per run are in the table above.")
    fn = Section(
        f"{prefix}functions",
        "Python functions whose sampled wait time changed most",
        [
            "Each kernel sample of a thread that was not running is charged to the innermost "
            "function of that thread's latest py-spy dump: as fine as the dumps are frequent."
        ],
    )
    _functions(fn, cmp)
    return [*out, fsec, loops, fn]


def _runs_section(cmp: dict[str, Any]) -> Section:
    sec = Section("runs", "The runs")
    diffs = cmp.get("meta_differences", cmp.get("bench_differences", []))
    if diffs:
        rows = [[d["field"], *[str(d["values"][lab]) for lab in cmp["labels"]]] for d in diffs]
        sec.body.append(Table(["differs in", *cmp["labels"]], rows))
    else:
        sec.say("The runs' command, Python version, CPU count, rate and machine are the same.")
    return sec


def compare_document(cmp: dict[str, Any]) -> Document:
    labels = cmp["labels"]
    facts = Table(
        ["", ""], [[lab, V(p, code=True)] for lab, p in zip(labels, cmp["paths"], strict=True)]
    )
    title = "circuit compare: " + " vs ".join(labels)
    if cmp["kind"] == "runs":
        sections = [*_comparison_sections(cmp, "", runs=True), _runs_section(cmp)]
        return Document(title, ["Baseline: ", V(labels[0]), "."], facts, sections, [])
    sections = []
    for i, cell in enumerate(cmp["cells"]):
        secs = _comparison_sections(cell, f"c{i}-", runs=False)
        for s in secs:
            s.title = f"{cell['name']}: {s.title}"
        sections += secs
    sections.append(_runs_section(cmp))
    warnings = [
        f"cell {' '.join(f'{k}={v}' for k, v in u['cell'].items())} is only in {', '.join(u['in'])}"
        for u in cmp["unmatched"]
    ]
    return Document(
        title,
        ["Bench folders compared cell by cell; baseline: ", V(labels[0]), "."],
        facts,
        sections,
        warnings,
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an older file keeps its mode through O_TRUNC
        os.write(fd, data)
    finally:
        os.close(fd)


def write_compare_report(cmp: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write the comparison as HTML (figures inlined) and Markdown (figures
    as PNG files beside it); returns both paths."""
    from . import _png
    from .html import HtmlRenderer
    from .markdown import MarkdownRenderer
    from .model import RenderedFigure

    html_path = Path(out)
    if html_path.is_dir():
        html_path = html_path / "compare-report.html"
    if html_path.suffix.lower() not in (".html", ".htm"):
        html_path = html_path.with_name(html_path.name + ".html")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    doc = compare_document(cmp)
    figures = {}
    for s in doc.sections:
        for b in s.body:
            if isinstance(b, Figure):
                png = _png(b.fig)
                fname = f"{html_path.stem}-{b.name}.png"
                _write_private(html_path.parent / fname, png)
                figures[b.name] = RenderedFigure(png, fname)
    md_path = html_path.with_suffix(".md")
    _write_private(html_path, HtmlRenderer().render(doc, figures).encode())
    _write_private(md_path, MarkdownRenderer().render(doc, figures).encode())
    return html_path, md_path
