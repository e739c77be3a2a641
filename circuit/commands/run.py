"""circuit run [options] -- CMD ARGS..."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from circuit.commands import add_sampling_options, default_run_dir, sampling_options
from circuit.tracer.pyspy_options import add_pyspy_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="start a command and trace it until it exits",
        description=(
            "Start CMD and sample every thread of it and of its children from outside "
            "the process until it exits. circuit exits with CMD's exit status. "
            "Ctrl-C reaches CMD; a second Ctrl-C sends SIGTERM, a third SIGKILL. "
            "Nothing sampled is lost: the run folder is flushed every second. "
            "On a terminal, the first line names circuit's PID: `kill -USR1 PID` "
            "takes a py-spy dump of the traced Python processes at once."
        ),
        epilog="example: circuit run --rate 200 -o runs/threads -- python app.py --workers 4",
    )
    add_sampling_options(p)
    add_pyspy_options(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuit.tracer.session import SessionError, describe, run_command

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SessionError("no command given: circuit run [options] -- CMD ARGS...")
    out = args.output or default_run_dir()
    opts = sampling_options(args, out)
    if not args.quiet and sys.stderr.isatty():
        # Whom to send SIGUSR1 for a stack dump, before the command's own output.
        me = os.getpid()
        print(
            f"circuit: PID {me} traces {shlex.join(cmd)} into {out} "
            f"(kill -USR1 {me}: a py-spy dump now)",
            file=sys.stderr,
            flush=True,
        )
    code, meta = run_command(cmd, opts)
    if not args.quiet:
        print(f"circuit: {describe(meta)}", file=sys.stderr)
        print(f"circuit: run saved in {out}  (circuit summary {out})", file=sys.stderr)
    return code
