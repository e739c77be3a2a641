"""User-facing errors: the CLI prints them as one line, without a traceback."""


class CircuitError(Exception):
    """A mistake or condition the user can act on (bad input, missing PID...)."""

    exit_code = 2
