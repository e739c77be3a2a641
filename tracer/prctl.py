"""prctl(2) through ctypes: the two process settings circuit changes."""

from __future__ import annotations

import sys

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
PR_SET_PTRACER = 0x59616D61  # linux/prctl.h ("Yama")


def prctl(option: int, arg: int) -> bool:
    """True if it took; False where prctl cannot (not Linux, or Yama absent
    for PR_SET_PTRACER): callers carry on without the setting."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


PR_SET_NAME = 15  # linux/prctl.h


def name_thread(name: str) -> bool:
    """Name the calling thread (its /proc/self/task/TID/comm, 15 bytes at
    most): a tool or a benchmark can then find it and read its CPU."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(name.encode()[:15])
        return libc.prctl(PR_SET_NAME, buf, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
