"""The py-spy options of a tracing command, and the observers they ask for.

Shared by circuit's commands (run, attach, bench) and the tracing agent
behind ``circuit.trace()``, which takes the same options: defined here,
below both, so the tracer never imports the command line.
"""

from __future__ import annotations

import argparse
import sys

from .observers import Observer


def _dump_interval(text: str) -> float | None:
    """``--dump-interval``: seconds (>= 0), or ``auto`` (None)."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'auto', got {text!r}") from None
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be >= 0 or 'auto', got {text}")
    return value


def _threshold(text: str) -> float:
    """``--loop-threshold``: seconds, > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < 3600:  # also NaN
        raise argparse.ArgumentTypeError(f"must be more than 0 s and under an hour, got {text}")
    return value


def add_pyspy_options(p: argparse.ArgumentParser, interval: float | None = None) -> None:
    g = p.add_argument_group(
        "py-spy",
        "Python stacks of every traced Python process, children included, saved in "
        "DIR/pyspy/ and joined to the kernel samples by thread id (docs/pyspy.md). "
        "On-demand dump: `kill -USR1 <circuit's PID>`, or circuit.dump() from the target. "
        "If py-spy cannot attach, circuit says why once and keeps the kernel samples.",
    )
    default = "auto" if interval is None else f"{interval:g}"
    g.add_argument(
        "--dump-interval",
        type=_dump_interval,
        default=interval,
        metavar="S|auto",
        help=f"seconds between periodic py-spy dumps; 0: only on demand / final (default "
        f"{default}). auto: one Python process at a time, in turn, as often as keeps py-spy "
        "under 0.5%% of one core from the start (a dump costs ~10 ms of CPU): the first ~2.4 s "
        "in, then every ~2 s; a number N: every process every N s, the first at 0.5 s",
    )
    g.add_argument(
        "--no-final-dump",
        dest="final_dump",
        action="store_false",
        help="no final dump when circuit is interrupted (Ctrl-C, kill) or --duration ends; "
        "by default there is one: the stacks of a hung program",
    )
    g.add_argument(
        "--dump-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="kill a py-spy dump that takes longer than S seconds (default 5)",
    )
    g.add_argument(
        "--nonblocking-dumps",
        action="store_true",
        help="read stacks without pausing the target (py-spy --nonblocking). Default: "
        "pause it while py-spy reads it: measured ~6 ms of target time per dump, less "
        "than nonblocking dumps cost, and consistent stacks (docs/pyspy.md)",
    )
    g.add_argument(
        "--profile",
        action="store_true",
        help="also run `py-spy record` and save pyspy/profile.svg (flame graph) and "
        "pyspy/profile.speedscope.json",
    )
    g.add_argument("--gil", action="store_true", help="profile: only threads holding the GIL")
    g.add_argument("--idle", action="store_true", help="profile: include idle threads")
    g.add_argument(
        "--native",
        action="store_true",
        help="dumps and profile include native (C) frames; pauses the target",
    )
    g.add_argument("--no-pyspy", dest="pyspy", action="store_false", help="no py-spy at all")
    g.add_argument(
        "--loop-threshold",
        type=_threshold,
        default=0.1,
        metavar="S",
        help="an asyncio event loop out of its selector this long is stalled (default 0.1, "
        "asyncio's slow_callback_duration): a stall gets a py-spy dump while it lasts (from "
        "S/2 in), and `circuit summary` lists it with its culprit (docs/loops.md)",
    )


def pyspy_observers(args: argparse.Namespace) -> list[Observer]:
    """The observers the py-spy options ask for (empty with --no-pyspy)."""
    from circuit.errors import CircuitError

    if not args.pyspy:
        return []
    if args.dump_timeout <= 0:
        raise CircuitError(f"--dump-timeout must be positive, got {args.dump_timeout:g}")
    for flag in ("gil", "idle"):
        if getattr(args, flag) and not args.profile:
            # A warning, not an error: the run is still worth having (the
            # GIL figures are measured anyway), but the flag must not pass
            # for doing something.
            print(
                f"circuit: warning: --{flag} only shapes the --profile flame graph "
                f"(py-spy record --{flag}) and does nothing without --profile; "
                "GIL waits and holders are measured either way (circuit summary)",
                file=sys.stderr,
                flush=True,
            )
    from .pyspy import PySpyObserver

    return [
        PySpyObserver(
            interval=args.dump_interval,
            nonblocking=args.nonblocking_dumps,
            native=args.native,
            final=args.final_dump,
            profile=args.profile,
            gil=args.gil,
            idle=args.idle,
            timeout=args.dump_timeout,
            quiet=args.quiet,
            loop_threshold=args.loop_threshold,
        )
    ]
