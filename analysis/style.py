"""Colours shared by the plots, the report and the notebook view (no heavy imports)."""

# One colour per wait reason, the same in every plot and in the report.
WAIT_COLORS: dict[str, str] = {
    "running": "#2ca02c",
    "runnable": "#98df8a",
    "sleep": "#9ecae1",
    "lock": "#ff7f0e",
    "gil": "#d62728",
    "poll": "#9467bd",
    "socket": "#1f77b4",
    "pipe": "#8c564b",
    "disk": "#bcbd22",
    "child": "#7f7f7f",
    "other": "#e7cbe0",
}
# Holding the GIL: a colour no wait reason uses (waiting for it is WAIT_COLORS["gil"]).
GIL_HELD_COLOR = "#e6a100"
# The timeline's GIL-holder lane: one colour per holding thread (the busiest
# first), then one for the rest and one for a holder circuit could not name.
# None of them is a wait reason's colour: a lane's colour never reads as a wait
# (tests/unit/test_analysis_plots.py checks both sets are disjoint).
GIL_HOLDER_COLORS: tuple[str, ...] = (GIL_HELD_COLOR, "#17becf", "#393b79", "#637939", "#7b4173")
GIL_HOLDER_OTHER_COLOR = "#c49c94"
GIL_HOLDER_UNNAMED_COLOR = "#bdbdbd"
FD_COLORS: dict[str, str] = {
    "file": "#8c8c8c",
    "socket": "#1f77b4",
    "pipe": "#8c564b",
    "epoll": "#9467bd",
    "eventfd": "#17becf",
    "timerfd": "#bcbd22",
    "signalfd": "#e377c2",
    "inotify": "#ff7f0e",
    "device": "#c7c7c7",
    "other": "#dbdb8d",
}
