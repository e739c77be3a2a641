"""Helper process behind ``circuit.trace()``: attach to the parent, stop on stdin EOF."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from circuit.errors import CircuitError

from .pyspy_options import add_pyspy_options, pyspy_observers
from .session import Options, attach


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="circuit-agent")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--force", action="store_true")
    add_pyspy_options(ap)
    a = ap.parse_args(argv)
    a.quiet = True  # our stderr is read only if we fail: py-spy's troubles go to meta.json
    first = True

    def ready(_t: int) -> None:
        nonlocal first
        if first:
            first = False
            sys.stdout.write("ready\n")
            sys.stdout.flush()

    try:
        opts = Options(
            out=a.out,
            rate=a.rate,
            backend=a.backend,
            force=a.force,
            quiet=True,
            loop_threshold=a.loop_threshold,
            observers=pyspy_observers(a),
            on_tick=ready,
        )
        attach(a.pid, opts, stop_fd=sys.stdin.fileno())
    except CircuitError as e:  # (SessionError is one)
        print(f"circuit: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
