"""``circuit report``: one self-contained HTML page and a Markdown twin.

The report explains the article's concepts (a blocked thread is put to
sleep, context switches, the GIL, the fd table, non-blocking sockets, epoll)
each beside evidence measured in this run or bench.  Every number comes from
the data; a section whose data is missing says so.

A run or bench becomes a :class:`~.model.Document` (:mod:`.run_sections`,
:mod:`.bench_sections`); each renderer (:mod:`.html`, :mod:`.markdown`) turns
that document into text.  Strings from the traced program only ever enter a
document as ``V`` values, which each renderer escapes; section text written
here is trusted.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .. import bench as B
from ..files import private_dirs, write_private
from .bench_sections import bench_document
from .html import HtmlRenderer, render_html
from .markdown import MarkdownRenderer, _md, _md_code, render_markdown
from .model import Document, Figure, RenderedFigure, Renderer, Section, Table, V
from .run_sections import run_document

__all__ = [
    "Document",
    "Figure",
    "HtmlRenderer",
    "MarkdownRenderer",
    "RenderedFigure",
    "Renderer",
    "Section",
    "Table",
    "V",
    "_md",
    "_md_code",
    "bench_document",
    "render_html",
    "render_markdown",
    "run_document",
    "write_report",
]


def write_report(target: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Render the report of a run or bench folder; returns (html, markdown) paths.
    Every file written is owner-only, like the run folder (analysis/files.py)."""
    target = Path(target)
    if B.is_bench(target):
        doc = bench_document(target)
    else:
        from ..run import load
        from .long_sections import is_long, long_run_document

        run = load(target)
        doc = long_run_document(run) if is_long(run) else run_document(run)
    html_path = Path(out) if out else target.with_name(target.name + "-report.html")
    if html_path.is_dir():  # -o a folder: the report goes in it
        html_path = html_path / f"{target.resolve().name}-report.html"
    if html_path.suffix.lower() not in (".html", ".htm"):
        html_path = html_path.with_name(html_path.name + ".html")
    md_path = html_path.with_suffix(".md")
    private_dirs(html_path.parent)
    figures = _draw_figures(doc, html_path)
    outputs: list[tuple[Renderer, Path]] = [
        (HtmlRenderer(), html_path),
        (MarkdownRenderer(), md_path),
    ]
    for renderer, path in outputs:
        write_private(path, renderer.render(doc, figures))
    return html_path, md_path


def _draw_figures(doc: Document, html_path: Path) -> dict[str, RenderedFigure]:
    """Each figure as PNG once, saved beside the page (``<stem>-<name>.png``)
    for the Markdown twin and kept in memory for the HTML page to inline."""
    import matplotlib.pyplot as plt

    figures: dict[str, RenderedFigure] = {}
    for s in doc.sections:
        for b in s.body:
            if isinstance(b, Figure):
                png = _png(b.fig)
                plt.close(b.fig)
                fname = f"{html_path.stem}-{b.name}.png"
                write_private(html_path.parent / fname, png)
                figures[b.name] = RenderedFigure(png, fname)
    return figures


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()
