"""python -m circuit.workloads WORKLOAD --model MODEL --tasks N --scale S"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from . import (
    COUNT,
    DISK_BYTES,
    HASH_BYTES,
    HASH_CHUNK,
    MIXED_COUNT,
    MIXED_ROUNDS,
    MIXED_WAIT_S,
    WORKLOADS,
    available_models,
    check,
)

PROG = "python -m circuit.workloads"

EPILOG = f"""\
workloads (one task does):
  io-sleep    sleep 4, 3, 4, 3... units (time.sleep / asyncio.sleep): the article's API calls
  io-http     one HTTP GET to a server process on 127.0.0.1 that answers after 4, 3... units
              (requests for blocking models, aiohttp for asyncio models)
  cpu-count   the article's loop: count to {COUNT:,} x scale
  cpu-hash    hashlib.sha256 of {HASH_BYTES // 2**30} GiB x scale, {HASH_CHUNK // 2**20} MiB per call
              (C code that releases the GIL: threads run it in parallel)
  disk        write {DISK_BYTES // 2**20} MiB x scale, fsync, drop from the page cache, read back
  mixed       {MIXED_ROUNDS} x (count to {MIXED_COUNT:,} x scale, then sleep {MIXED_WAIT_S:g} s x scale)

models: {", ".join(available_models())}
  CPU and file work under asyncio models runs on the event loop as written.

A unit is one second times --scale. Every task records task-start / task-end
marks (circuit.mark) so a trace shows task spans over thread states. The last
line printed is a JSON record: wall_s (tasks only), cpu_s, the interpreter and
whether its GIL is enabled.

examples:
  {PROG} io-sleep --model threads              the article: ~4 s instead of 7
  {PROG} cpu-count --model processes --tasks 4 --scale 0.1
  circuit run -- {PROG} io-http --model asyncio --tasks 8 --scale 0.2
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, no usage block: the message says what is valid
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Run a classic workload under one concurrency model, as a normal program.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("workload", metavar="WORKLOAD", nargs="?", help=", ".join(WORKLOADS))
    p.add_argument(
        "-m", "--model", default="sequential", help="concurrency model (default sequential)"
    )
    p.add_argument("-n", "--tasks", type=int, default=2, help="number of tasks (default 2)")
    p.add_argument(
        "-s",
        "--scale",
        type=float,
        default=1.0,
        help="multiplies every duration and size (default 1)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="pool size for thread-pool/process-pool (default: library default, at most N)",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=None,
        metavar="S",
        help="io-http: every request waits S seconds (default 4, 3... units)",
    )
    p.add_argument(
        "--dir",
        default=None,
        help="disk: where the temporary folder goes (default $TMPDIR or /tmp)",
    )
    p.add_argument(
        "--python",
        default=None,
        metavar="PATH",
        help="run under this interpreter instead (e.g. a free-threaded build)",
    )
    p.add_argument(
        "--result", default=None, metavar="FILE", help="write the JSON record here, not to stdout"
    )
    return p


def _fail(msg: str, code: int = 2) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    if a.workload is None:
        return _fail(f"no workload given (valid: {', '.join(WORKLOADS)})")
    if a.python:
        python = a.python
        if os.sep not in python:
            import shutil

            python = shutil.which(python) or python
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            return _fail(f"--python: no such interpreter: {a.python}")
        from .harness import module_cmd

        rest = _without_python(argv)
        cmd = module_cmd("circuit.workloads", rest, python=python)
        sys.stdout.flush()
        sys.stderr.flush()
        # exec, not a child: the traced process tree stays the same shape.
        os.execv(cmd[0], cmd)
    msg = check(a.workload, a.model, a.tasks, a.scale)
    if msg is None and a.workers is not None and a.workers < 1:
        msg = f"--workers must be at least 1, got {a.workers}"
    if msg is None and a.latency is not None and not a.latency >= 0:
        msg = f"--latency must be 0 or more seconds, got {a.latency:g}"
    if msg:
        return _fail(msg)

    from .harness import WorkloadError, emit, run

    try:
        result = run(a.workload, a.model, a.tasks, a.scale, a.workers, a.latency, a.dir)
    except WorkloadError as e:
        return _fail(str(e), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    emit(result, a.result)
    return 0


def _without_python(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for x in argv:
        if skip:
            skip = False
        elif x == "--python":
            skip = True
        elif not x.startswith("--python="):
            out.append(x)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
