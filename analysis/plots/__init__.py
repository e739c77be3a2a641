"""Plots of runs and benches (matplotlib's object-oriented API)."""

from .run import (
    _empty_figure,
    context_switches,
    cpu,
    fds,
    gil,
    model_comparison,
    save,
    scaling,
    sleep_split,
    timeline,
)

__all__ = [
    "_empty_figure",
    "context_switches",
    "cpu",
    "fds",
    "gil",
    "model_comparison",
    "save",
    "scaling",
    "sleep_split",
    "timeline",
]
