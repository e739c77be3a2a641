"""The report's event-loop section: each loop's stalls, when, how long, in
what state, and the code that blocked it (analysis/loops.py)."""

from __future__ import annotations

from typing import Any

from .model import Figure, Section, Table, V, num, secs


def sec_loops(run: Any, wall_s: float | None = None, loops: list | None = None) -> Section:
    """``loops``: the summary's, when it has them (else computed from the run)."""
    from ..loops import loop_figures
    from ..plots.loops import loop_stalls

    sec = Section(
        "loops",
        "Event loops: what blocked them",
        [
            "An asyncio (or uvloop) event loop runs one callback at a time; while one runs, "
            "every other task waits. Seen from outside, the loop's thread waits in epoll_wait "
            "when it is idle; a stall is a stretch of at least the loop threshold "
            "(--loop-threshold, 0.1 s by default, asyncio's slow_callback_duration) out of "
            "it. Its stack is a py-spy dump taken while the stall lasted. Start and end are "
            "each known to half a sampling period (docs/loops.md).",
        ],
    )
    stacks = getattr(run, "stacks", None)
    if loops is None:
        loops = loop_figures(run.meta, run.threads, stacks)
    if not loops:
        sec.missing("no thread waited in epoll_wait as an event loop does.")
        return sec
    sec.body.append(Figure("loops", loop_stalls(loops, wall_s), "Event loop stalls over time"))
    rows = []
    for lp in loops:
        b = lp["busy_stretches"]
        rows.append(
            [
                lp["pid"],
                lp["tid"],
                lp["thread_name"],
                f"{100 * lp['busy_share']:.0f}%" + (" (saturated)" if lp["saturated"] else ""),
                secs(lp["observed_s"]),
                len(lp["stalls"]),
                secs(lp["longest_stall_s"]),
                f"{b['count']} · p50 {secs(b['p50_s'])} · p90 {secs(b['p90_s'])}",
            ]
        )
    sec.body.append(
        Table(
            ["pid", "tid", "thread", "busy", "observed", "stalls", "longest", "busy stretches"],
            rows,
        )
    )
    stalls = [(lp, st) for lp in loops for st in lp["stalls"]]
    if not stalls:
        sec.say(f"No stall of {secs(loops[0]['threshold_s'])} or more.")
    else:
        stalls.sort(key=lambda x: -x[1]["duration_s"])
        sec.body.append(
            Table(
                ["at", "blocked for", "pid / tid", "doing", "culprit", "stack (innermost first)"],
                [
                    [
                        secs(st["start_s"]),
                        secs(st["duration_s"]),
                        f"{lp['pid']} / {lp['tid']}",
                        st["state"],
                        V(st["culprit"] or "(no dump during the stall)", code=True),
                        V(" <- ".join(st["stack"][:6]), code=True),
                    ]
                    for lp, st in stalls[:30]
                ],
            )
        )
        if len(stalls) > 30:
            sec.say(f"(the 30 longest of {len(stalls)} stalls are listed)")
    sec.say(
        "asyncio tasks: ", V(loops[0]["tasks"]), f" Threshold: {num(loops[0]['threshold_s'])} s."
    )
    return sec
