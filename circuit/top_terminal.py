"""The terminal under ``circuit top``: cbreak mode and its undoing, and the
keys in what the terminal sends."""

from __future__ import annotations

import sys
from typing import Any


def cbreak() -> list[Any] | None:
    import termios
    import tty

    fd = sys.stdin.fileno()
    try:
        old = termios.tcgetattr(fd)
        tty.setcbreak(fd)
    except termios.error:
        return None
    return old


def restore(old: list[Any]) -> None:
    import termios

    try:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, old)
    except termios.error:
        pass


_ESCAPES = {"\x1b[A": "up", "\x1b[B": "down", "\x1bOA": "up", "\x1bOB": "down"}


def keys(data: bytes) -> list[str]:
    """The keys in what the terminal sent: letters, and the arrows' escapes."""
    text = data.decode(errors="replace")
    out = []
    i = 0
    while i < len(text):
        seq = text[i : i + 3]
        if seq in _ESCAPES:
            out.append(_ESCAPES[seq])
            i += 3
            continue
        out.append(text[i].lower() if text[i].isalpha() else text[i])
        i += 1
    return out
