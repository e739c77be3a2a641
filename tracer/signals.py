"""How a session takes signals: blocked, and waited for as the loop's sleep.

circuit blocks SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGCHLD (and
the PASSED_ON ones) and takes them with ``sigtimedwait`` as its inter-sample
sleep, so a signal wakes the loop at once and never raises
KeyboardInterrupt in the middle of a write.  ``siginfo.si_code`` tells a
terminal's Ctrl-C (sent by the kernel to the whole foreground process group,
target included) from a ``kill`` aimed at circuit alone.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

# Signals that would kill circuit by default and mean nothing to it: `run`
# passes them on to the target (as `timeout` or an init would); `attach`
# ignores them (the target is not circuit's to signal).
PASSED_ON = {signal.SIGUSR2, signal.SIGALRM}
# Signals that ask circuit to stop.
STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
SIGNALS = {*STOPS, signal.SIGUSR1, signal.SIGCHLD, *PASSED_ON}
SI_KERNEL = 0x80  # siginfo.si_code of a signal the kernel sent (a terminal's Ctrl-C)

Handler = Callable[[signal.struct_siginfo], bool]


class SignalWait:
    """The loop's sleep: sigtimedwait on the blocked signals, each handed to
    ``handler``; True once a handler said the loop should stop."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def __call__(self, timeout: float) -> bool:
        stop = False
        while True:
            info = signal.sigtimedwait(SIGNALS, max(timeout, 0.0))
            if info is None:
                return stop
            stop = self.handler(info) or stop
            timeout = 0.0  # drain what is pending, then go back to sampling


def block_early() -> set[int]:
    """Block SIGNALS, before the run's writer loads pyarrow: the threads it
    starts (OpenBLAS, through numpy) inherit the mask.  A thread that does not
    block them would take a signal sent to circuit: SIGUSR1 or SIGTERM would
    kill circuit there, SIGINT raise KeyboardInterrupt mid-sample.  Returns
    the mask to restore."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


def restore(old: set[int]) -> None:
    # Drop what is still pending (SIGCHLD from py-spy, say) before unblocking.
    while signal.sigtimedwait(SIGNALS, 0) is not None:
        pass
    signal.pthread_sigmask(signal.SIG_SETMASK, old)


def signal_name(code: int | None) -> str | None:
    """``SIGSEGV`` for an exit code of -11 (killed by signal 11), else None."""
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
