"""circuit top PID | circuit top [options] -- CMD ARGS..."""

from __future__ import annotations

import argparse
import math

from circuit.commands import add_sampling_options, sampling_options
from circuit.tracer.pyspy_options import add_pyspy_options

DESCRIPTION = """\
A live view of a traced process tree, refreshed twice a second: per process
its CPU, threads, fds by kind and RSS, its GIL (holder now, contention over
the window) and its event loops' stalls; per thread its state, its wait
reason now, the share of the last window by wait reason, CPU, context
switches per second and run-queue delay. The figures are those `circuit
summary` gives for the window (docs/top.md).

keys: q quits (an attached target keeps running; `top -- CMD` stops CMD as
Ctrl-C does under `circuit run`), s cycles the sort (CPU, wait, name), p
pauses the display (sampling goes on), d takes a py-spy dump and shows the
selected thread's stack, up/down or j/k select a thread.

When stdout is not a terminal, a plain-text table is printed every window;
--once prints one and exits.
"""

EPILOG = """\
examples:
  circuit top 4242                      watch a running process (q: leave it running)
  circuit top -- python app.py          start app.py and watch it; q stops it
  circuit top 4242 --window 5 --rate 200
  circuit top 4242 -o runs/live         also save the run: circuit summary runs/live
  circuit top 4242 --once               one snapshot of the next 2 s, as plain text
  circuit top 4242 > top.log            a plain-text table every window
"""


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (0.5 <= v <= 3600) or math.isnan(v):
        raise argparse.ArgumentTypeError(f"must be from 0.5 s to an hour, got {text}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "top",
        help="a live view of every thread's state, wait reason, CPU and GIL",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target",
        nargs="*",
        metavar="PID | -- CMD ARGS",
        help="the PID of a running process, or -- and a command to start",
    )
    p.add_argument(
        "--window",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="the share window: figures are over the last S seconds (default 2)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="sample for one window, print one plain-text snapshot and exit",
    )
    add_sampling_options(
        p, out_help="also save the run in DIR, as run/attach would (default: not saved)"
    )
    add_pyspy_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from circuit.errors import CircuitError
    from circuit.top import TopTarget, top

    target = list(args.target)
    if not target:
        raise CircuitError("nothing to watch: circuit top PID, or circuit top [options] -- CMD")
    if target[0].isdigit():
        if len(target) > 1:
            raise CircuitError(
                f"give a PID or a command, not both: {' '.join(target)} "
                "(a command goes after --: circuit top -- CMD ARGS)"
            )
        what = TopTarget(pid=int(target[0]))
    else:
        what = TopTarget(cmd=target)
    out = args.output
    opts = sampling_options(args, out or Path("."))
    return top(what, opts, window_s=args.window, once=args.once, save=out is not None)
