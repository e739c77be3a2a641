from __future__ import annotations

import signal

# A shell without job control starts background jobs (`make test &`, nohup)
# with SIGINT and SIGQUIT ignored, and an ignored signal stays ignored across
# exec: every target the tests start would ignore the Ctrl-C the signal tests
# send, and they would hang until their timeouts.  Give them the defaults.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Every run folder the tests made, summarised both ways, must agree
    (the batched summary of long runs, analysis/query.py)."""
    import os

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or os.environ.get("CIRCUIT_SKIP_STREAM_CHECK"):
        return
    try:
        base = factory.getbasetemp()
    except (OSError, ValueError):
        return
    from tests.support.stream_check import check_runs

    n, found, bad = check_runs(base)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"batched vs in-memory summary: {n} of {found} run folders (random order), "
            f"{len(bad)} differ"
        )
        for folder, d in bad.items():
            reporter.write_line(f"  {folder}: {'; '.join(d)}")
    if bad:
        session.exitstatus = 1
