"""Plots of runs and benches (matplotlib's object-oriented API).

Each function returns a :class:`matplotlib.figure.Figure` (for notebooks; not
registered with pyplot, so it never needs closing and displays once, and the
user's backend is never changed: ``savefig`` picks a canvas per format);
``save(fig, stem)`` writes ``stem.png`` and ``stem.svg``.  Run-level
functions (:mod:`.run`) take a run (anything with ``.meta``, ``.threads``,
``.processes`` and ``.marks``, e.g. ``circuit.load(path)``); bench-level ones
(:mod:`.bench`) take the frames from :mod:`circuit.analysis.bench`.
"""

from .base import _empty_figure, save
from .bench import model_comparison, scaling, sleep_split
from .run import context_switches, cpu, fds, gil, timeline

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
