"""The report's Markdown twin: the same document, its figures as PNG files beside it."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from .model import Document, Figure, Para, RenderedFigure, Table, V

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(x: Any) -> str:
    """Escape a data string for Markdown: HTML-escape, then backslash Markdown syntax."""
    s = html.escape(str(x), quote=False).replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", s)


def _md_code(x: Any) -> str:
    # Inside a code span nothing is interpreted; a fence longer than any run of
    # backticks in the value keeps it closed.
    s = str(x).replace("\n", " ")
    ticks = "`" * (max((len(m) for m in re.findall("`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


def _inline_md(p: Para) -> str:
    out = []
    for part in p:
        if isinstance(part, V):
            text = _md_code(part.value) if part.code else f"**{_md(part.value)}**"
            out.append(f"[{text}](<{part.href}>)" if part.href else text)
        else:
            out.append(part)
    return "".join(out)


def _table_md(t: Table, header: bool = True) -> str:
    def cell(c: Any) -> str:
        v = c.value if isinstance(c, V) else c
        return _md(v).replace("|", "\\|")

    head = t.header if header else ["", ""]
    lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in t.rows]
    return "\n".join(lines)


def render_markdown(doc: Document, png_names: dict[str, str]) -> str:
    out = [
        f"# {doc.title}",
        "",
        _inline_md(doc.subtitle),
        "",
        _table_md(doc.facts, header=False),
        "",
    ]
    for s in doc.sections:
        out += [f"## {s.title}", ""]
        out += [f"> {c}" for c in s.concept]
        out.append("")
        for b in s.body:
            if isinstance(b, Table):
                out += [_table_md(b), ""]
            elif isinstance(b, Figure):
                out += [f"![{b.caption}]({png_names[b.name]})", ""]
            else:
                out += [_inline_md(b), ""]
    if doc.warnings:
        out += ["## Warnings", ""] + [f"- {_md(w)}" for w in doc.warnings] + [""]
    return "\n".join(out)


class MarkdownRenderer:
    """The report as Markdown, each figure linked by its file name."""

    def render(self, doc: Document, figures: Mapping[str, RenderedFigure]) -> str:
        return render_markdown(doc, {name: f.file for name, f in figures.items()})
