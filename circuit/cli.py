"""``circuit`` command line: one small module per subcommand in circuit.commands."""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CircuitError

# name -> module in circuit.commands; each has add_parser(subparsers) and run(args) -> int
COMMANDS = ("run", "attach", "top", "summary", "compare", "bench", "report", "export", "demo")

DESCRIPTION = """\
circuit traces Python programs from outside the process: every thread's kernel
state (running, sleeping, waiting on disk), why it sleeps (nanosleep, futex,
epoll, socket, pipe), CPU time, context switches, run-queue delay and open file
descriptors, for the process and all its children.

examples:
  circuit run -- python app.py          trace a command until it exits
  circuit run --rate 1000 -o out -- python -m mypkg
  circuit attach 1234 --duration 10     trace a running process
  circuit top 1234                      a live view of its threads: states, waits, CPU, GIL
  circuit summary out                   what the threads did, where time went
  circuit summary out --json            the same, machine-readable
  circuit compare before after          two runs side by side: what changed most
  circuit bench                         threads vs asyncio vs processes, measured
  circuit report out                    HTML report (+ Markdown) with plots and explanations
  circuit export out --format perfetto  trace JSON for ui.perfetto.dev (or --format csv)
"""


def build_parser() -> argparse.ArgumentParser:
    from circuit import __version__

    parser = argparse.ArgumentParser(
        prog="circuit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"circuit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"circuit.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CircuitError as e:
        print(f"circuit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("circuit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
