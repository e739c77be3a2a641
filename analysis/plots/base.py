"""What every plot shares: the style applied per call, figure construction
outside pyplot, the empty figure, label shortening and saving."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
from matplotlib.figure import Figure

MODEL_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]

STYLE = {
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,  # grid lines behind bars and state intervals
    "figure.dpi": 100,
    "svg.fonttype": "none",
}

_F = TypeVar("_F", bound=Callable[..., Any])


def _styled(fn: _F) -> _F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kw)

    return wrapper  # type: ignore[return-value]


def save(fig: Figure, stem: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write ``stem.png`` / ``stem.svg``; returns the paths."""
    out = []
    for fmt in formats:
        p = Path(f"{stem}.{fmt}")
        with matplotlib.rc_context(STYLE):
            fig.savefig(p, format=fmt, dpi=110 if fmt == "png" else None, bbox_inches="tight")
        out.append(p)
    return out


def _subplots(*args: Any, figsize: tuple[float, float], **kw: Any) -> tuple[Figure, Any]:
    # Figures are not registered with pyplot: nothing to close, no leak in a
    # long report, and a notebook shows the returned figure exactly once.
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kw)


@_styled
def _empty_figure(title: str, message: str, size: tuple[float, float] = (8, 2.2)) -> Figure:
    fig = Figure(figsize=size)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#555")
    return fig


def _short(s: Any, n: int = 28) -> str:
    """Shorten a (possibly target-controlled) string for a label; ``$`` is escaped
    so matplotlib never parses a thread name as mathtext."""
    s = str(s)
    s = s if len(s) <= n else s[: n - 1] + "…"
    return s.replace("$", r"\$")
