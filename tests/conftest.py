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
