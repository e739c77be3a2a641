"""``circuit report``: one self-contained HTML page and a Markdown twin."""

from .run_sections import (
    Document,
    Figure,
    Section,
    Table,
    V,
    _md,
    _md_code,
    bench_document,
    render_html,
    render_markdown,
    run_document,
    write_report,
)

__all__ = [
    "Document",
    "Figure",
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
