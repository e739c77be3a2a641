"""What a tracing session is asked to do, and how it refuses."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuit.errors import CircuitError

from .observers import Observer


class SessionError(CircuitError):
    """A user-facing failure: printed as one line, no traceback."""


@dataclass
class Options:
    out: Path
    rate: float = 100.0
    backend: str = "auto"
    force: bool = False
    fds: bool = True
    duration: float | None = None
    quiet: bool = False
    redact: bool = False  # mask secret-looking command-line values (tracer/redact.py)
    record_env: bool = False  # keep the target's environment (secret-looking values masked)
    loop_threshold: float = 0.1  # event loop stalls: seconds out of the selector (docs/loops.md)
    exits: bool = True  # listen for the kernel's exit records (root; tracer/exits.py)
    extra_meta: dict[str, Any] = field(default_factory=dict)
    on_tick: Callable[[int], None] | None = None
    observers: list[Observer] = field(default_factory=list)

    def say(self, msg: str) -> None:
        """A progress line on stderr, unless quiet."""
        if not self.quiet:
            print(f"circuit: {msg}", file=sys.stderr, flush=True)
