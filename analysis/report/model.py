"""The report's document model: what a section says, before any renderer.

A :class:`Document` is a title, a table of facts and :class:`Section` objects,
each a concept (trusted prose written here) and a body of sentences, tables
and figures built from the data.  Strings from the traced program (command
lines, thread names, paths, addresses) only ever enter a document as
:class:`V` values, which every renderer escapes.

A renderer turns a document into text; :class:`Renderer` is the interface the
HTML and Markdown renderers share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class V:
    """A value from the data; rendered escaped (``code`` -> monospace;
    ``href``: a link to that address, escaped too)."""

    value: Any
    code: bool = False
    href: str | None = None


Inline = str | V
Para = list[Inline]  # a sentence: trusted text and escaped values


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]  # every cell is data: escaped


@dataclass
class Figure:
    name: str  # file stem for the Markdown twin
    fig: Any  # matplotlib Figure
    caption: str


@dataclass
class Section:
    id: str
    title: str
    concept: list[str] = field(default_factory=list)  # trusted prose
    body: list[Para | Table | Figure] = field(default_factory=list)

    def say(self, *parts: Inline) -> None:
        self.body.append(list(parts))

    def missing(self, what: str) -> None:
        self.body.append(["Not measured in this run: " + what])


@dataclass
class Document:
    title: str
    subtitle: list[Inline]
    facts: Table
    sections: list[Section]
    warnings: list[str]


@dataclass(frozen=True)
class RenderedFigure:
    """A figure drawn once for every renderer: its PNG and the file it is saved as."""

    png: bytes
    file: str


class Renderer(Protocol):
    """Turns a document into one output's text (HTML, Markdown)."""

    def render(self, doc: Document, figures: Mapping[str, RenderedFigure]) -> str: ...


def num(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def secs(x: float) -> str:
    """Seconds, readably: 3 significant decimals for sub-second values."""
    if x == 0:
        return "0 s"
    if x >= 10:
        return f"{x:.1f} s"
    if x >= 0.01:
        return f"{x:.3f} s"
    return f"{x * 1000:.2f} ms"
