"""The report of a long run: figures from the batched summary, the timeline
from per-bucket shares (analysis/query.py, plots/shares.py).

A run of more than ``LONG_RUN_ROWS`` thread-samples is reported this way,
in bounded memory: the facts, the findings, the thread timeline and table,
the event loops and the GIL figures.  The sections drawn from every state
interval of every thread (sleeps by syscall, CPU and switch rates over
time, the epoll section) are left out, and the report says so; they are
what ``circuit report`` gives for shorter runs.
"""

from __future__ import annotations

from typing import Any

from .findings_section import sec_findings
from .loop_sections import sec_loops
from .model import Document, Figure, Section, Table, V, num
from .run_sections import fact_values

# Above this many thread-samples, `circuit report` reads the run in batches.
LONG_RUN_ROWS = 4_000_000
BUCKETS = 600
# The facts a long run's report shows (run_sections.fact_values' keys).
LONG_FACTS = [
    "command",
    "mode",
    "exit code",
    "wall time",
    "CPU time",
    "parallelism (CPU / wall)",
    "samples",
    "processes / threads seen",
]


def is_long(run: Any) -> bool:
    from ..query import streamable

    n = run.meta.get("thread_samples")
    return isinstance(n, int) and n > LONG_RUN_ROWS and streamable(run)


def long_run_document(run: Any) -> Document:
    from ..plots.shares import timeline_shares
    from ..query import scan

    meta = run.meta
    s, shares = scan(run, buckets=BUCKETS)
    run._long_summary = s
    values = fact_values(meta, s)
    facts = Table(["", ""], [[k, values[k]] for k in LONG_FACTS])
    timeline = Section(
        "threads",
        "What every thread was doing",
        [
            "Each lane is one kernel thread; each column one time bucket "
            f"(the run in about {BUCKETS}), stacked by the share of the thread's time in "
            "each wait reason: a long run's timeline, drawn from its sums rather than from "
            "every sample."
        ],
    )
    timeline.body.append(
        Figure("timeline", timeline_shares(run, shares), "Thread states over time")
    )
    rows = []
    for t in sorted(s["threads"], key=lambda t: -t["cpu_s"])[:30]:
        total = sum(t["time_by_wait"].values()) or 1.0
        top = sorted(((v, k) for k, v in t["time_by_wait"].items() if v > 0), reverse=True)[:3]
        rows.append(
            [
                t["pid"],
                t["tid"],
                t["name"],
                num(t["cpu_s"]),
                f"{t['ctx_voluntary']} / {t['ctx_involuntary']}",
                ", ".join(f"{k} {100 * v / total:.0f}%" for v, k in top),
            ]
        )
    timeline.body.append(
        Table(["pid", "tid", "name", "CPU s", "switches vol / invol", "time went to"], rows)
    )
    gil = Section("gil", "The GIL", [])
    g = s.get("gil") or {}
    if g.get("processes"):
        gil.body.append(
            Table(
                ["pid", "source", "threads", "thread s", "GIL wait s", "contention"],
                [
                    [
                        p["pid"],
                        p["source"],
                        p["threads"],
                        num(p["thread_s"]),
                        num(p["wait_s"]),
                        p["contention"],
                    ]
                    for p in g["processes"]
                ],
            )
        )
    else:
        gil.missing("no Python process was seen.")
    left_out = Section(
        "long-run",
        "Left out for a long run",
        [
            f"This run has {s['thread_samples']:,} thread samples (more than "
            f"{LONG_RUN_ROWS:,}): the report was made from sums read in batches, in bounded "
            "memory. Sleeps by syscall, CPU and context-switch rates over time and the epoll "
            "section need every state interval and are left out; circuit.load(RUN) gives "
            "them in a notebook, and docs/longruns.md shows queries over the Parquet files."
        ],
    )
    sections = [
        sec_findings(s.get("findings") or [], s.get("profiles") or []),
        timeline,
        sec_loops(run, s["wall_s"], loops=s.get("loops") or []),
        gil,
        left_out,
    ]
    return Document(
        title="circuit report",
        subtitle=["Run ", V(str(getattr(run, "path", "")), code=True)],
        facts=facts,
        sections=sections,
        warnings=[*(s.get("warnings") or []), *getattr(run, "load_warnings", [])],
    )
