"""circuit attach PID [--duration S]"""

from __future__ import annotations

import argparse
import math
import sys

from circuit.commands import add_sampling_options, default_run_dir, sampling_options
from circuit.tracer.pyspy_options import add_pyspy_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attach",
        help="trace a running process (and its children)",
        description=(
            "Sample an existing process and its children from outside until it exits, "
            "--duration ends, or Ctrl-C (which stops circuit, not the target)."
        ),
        epilog="example: circuit attach 4242 --duration 30 -o runs/server",
    )
    p.add_argument("pid", type=int, metavar="PID")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    add_sampling_options(p)
    add_pyspy_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuit.tracer.session import SessionError, attach, check_attachable, describe

    if args.duration is not None and not (0 < args.duration < math.inf):
        raise SessionError(
            f"--duration must be a positive number of seconds, got {args.duration:g}"
        )
    check_attachable(args.pid)  # before saying "tracing": no progress line ahead of the error
    out = args.output or default_run_dir(f"pid{args.pid}")
    opts = sampling_options(args, out, duration=args.duration)
    if not args.quiet:
        print(f"circuit: tracing PID {args.pid} into {out} (Ctrl-C to stop)", file=sys.stderr)
    meta = attach(args.pid, opts)
    if not args.quiet:
        print(f"circuit: {describe(meta)} ({meta.get('stop_reason')})", file=sys.stderr)
        print(f"circuit: run saved in {out}", file=sys.stderr)
    return 0
