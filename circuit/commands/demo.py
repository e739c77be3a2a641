"""circuit demo: the article's sequential-vs-threads I/O case, traced."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = {
    "sequential": "import time\nfor d in (0.4, 0.3):\n    time.sleep(d)\n",
    "threads": (
        "import threading, time\n"
        "ts = [threading.Thread(target=time.sleep, args=(d,)) for d in (0.4, 0.3)]\n"
        "[t.start() for t in ts]\n[t.join() for t in ts]\n"
    ),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="trace the article's example (two API calls: sequential vs threads)",
        description="Trace the article's I/O example under each model and summarise it.",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("circuit-runs/demo"), metavar="DIR")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import circuit
    from circuit.commands.summary import render
    from circuit.tracer.session import Options, run_command

    for model, code in EXAMPLES.items():
        out = args.output / model
        opts = Options(out=out, force=args.force, quiet=True)
        run_command([sys.executable, "-c", code], opts)
        print(f"\n== {model} ==")
        render(circuit.load(out).summary())
    return 0
