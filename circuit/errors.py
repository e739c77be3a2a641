"""User-facing errors: the CLI prints them as one line, without a traceback."""


class CircuitError(Exception):
    """A mistake or condition the user can act on (bad input, missing PID...)."""

    exit_code = 2


def not_a_run(path: object, why: str = "no meta.json") -> str:
    """The one message every command gives for a path that is not a run
    folder (summary, report, export reading one; run and attach refusing to
    write into one)."""
    return f"{path} is not a circuit run folder ({why})"
