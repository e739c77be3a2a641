"""circuit: see threads, asyncio and processes from the kernel's side.

Public API (kept light to import: pandas loads only when a run is loaded):

* ``circuit.load(path)``  -> a :class:`~circuit.analysis.run.Run`
* ``circuit.trace(path)`` -> context manager tracing this process from a helper
* ``circuit.mark(name, **fields)`` -> a named event in the current run
  (``circuit.mark("phase", name="load")``: fields may include ``name``)
* ``circuit.load_many("runs/*")`` -> many runs as one dataset (a ``run`` column)
* ``circuit.compare([a, b])`` -> runs side by side, as a DataFrame
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import CircuitError
from .marks import mark

__version__ = "0.1.0"
__all__ = ["CircuitError", "__version__", "compare", "dump", "load", "load_many", "mark", "trace"]

if TYPE_CHECKING:
    from .analysis.many import Runs
    from .analysis.run import Run
    from .api import Trace


def load(path: Any) -> Run:
    """Load a run folder: ``.meta`` and DataFrames ``.threads``, ``.processes``, ``.fds``."""
    from .analysis.run import load as _load

    return _load(path)


def load_many(paths: Any) -> Runs:
    """Many run folders as one dataset: paths, globs (``"runs/*"``) or
    folders of runs.  ``.threads`` (every table) with a ``run`` column,
    ``.summary()`` one row per run, ``.files("threads")`` for DuckDB, Spark
    or Dask (docs/longruns.md)."""
    from .analysis.many import load_many as _load_many

    return _load_many(paths)


def compare(runs: Any, labels: Any = None) -> Any:
    """Runs (folders or loaded runs) side by side, the first the baseline:
    the table of ``circuit compare`` as a DataFrame (bench folders: cell by
    cell).  ``labels``: one name per run (default: the folder names)."""
    from .api import compare as _compare

    return _compare(runs, labels)


def trace(path: Any, **kwargs: Any) -> Trace:
    """``with circuit.trace("out"):`` samples this process from a helper process."""
    from .api import Trace

    return Trace(path, **kwargs)


def dump(run_dir: Any = None) -> int:
    """Ask the circuit process tracing us for a py-spy dump now (SIGUSR1 to it).

    ``run_dir`` defaults to the current run (``$CIRCUIT_RUN_DIR``, set by
    ``circuit run``).  Returns the tracer's PID; raises CircuitError when no
    tracer with py-spy runs for that folder.
    """
    from .tracer.pyspy import request_dump

    return request_dump(run_dir)
