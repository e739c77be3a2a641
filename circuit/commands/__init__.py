"""One module per subcommand: ``add_parser(subparsers)`` and a ``run(args)``."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from circuit.tracer.pyspy_options import pyspy_observers


def default_run_dir(prefix: str = "run") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return Path("circuit-runs") / f"{prefix}-{stamp}"


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("a folder name is needed, not an empty string")
    return Path(text)


def add_sampling_options(
    p: argparse.ArgumentParser,
    out_help: str = "run folder to write (default: a new folder under ./circuit-runs/)",
) -> None:
    p.add_argument("-o", "--output", type=_folder, default=None, metavar="DIR", help=out_help)
    p.add_argument("--force", action="store_true", help="overwrite DIR if it holds a run")
    p.add_argument(
        "--rate",
        type=float,
        default=100.0,
        metavar="HZ",
        help="samples per second (default 100; 1000 works for small targets)",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "proc", "psutil"),
        default="auto",
        help="auto: /proc fast path on Linux, psutil elsewhere",
    )
    p.add_argument(
        "--no-fds", dest="fds", action="store_false", help="do not scan open file descriptors"
    )
    p.add_argument(
        "--no-exits",
        dest="exits",
        action="store_false",
        help="do not listen for the kernel's exit records (root only; docs/format.md, exits)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.add_argument(
        "--redact",
        action="store_true",
        help="mask values of secret-looking options in recorded command lines "
        "(--password X, --api-key=X, TOKEN=X, https://user:X@host); see docs/reliability.md",
    )
    p.add_argument(
        "--record-env",
        action="store_true",
        help="also record the target's environment in meta.json (never recorded otherwise; "
        "values of secret-looking variables are masked)",
    )


def sampling_options(args: argparse.Namespace, out: Path, **extra: Any) -> Any:
    """The tracer's Options from the options add_sampling_options/add_pyspy_options added."""
    from circuit.tracer.session import Options

    return Options(
        out=out,
        rate=args.rate,
        backend=args.backend,
        force=args.force,
        fds=args.fds,
        exits=args.exits,
        quiet=args.quiet,
        redact=args.redact,
        record_env=args.record_env,
        loop_threshold=args.loop_threshold,
        observers=pyspy_observers(args),
        **extra,
    )


def load_run(path: Path) -> Any:
    """The run folder a reading command (summary, export) was given; a bench
    folder, which holds many runs, is pointed at ``circuit report``."""
    import circuit
    from circuit.analysis.bench import is_bench
    from circuit.errors import CircuitError

    if is_bench(path):
        raise CircuitError(
            f"{path} is a bench folder (many runs), not a run: see `circuit report {path}`"
        )
    return circuit.load(path)
