"""The run report's first section: the findings (analysis/findings/), each
with its numbers and the Python stack that explains it; and which concept
passages the rest of the report keeps (only those the findings need)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import Section, Table, V

# What each kind means, in one passage, with where the rule is written.
KIND_CONCEPTS = {
    "gil-contention": (
        "gil-contention: CPython lets one thread run Python bytecode at a time; the "
        "others sleep on a futex inside the interpreter until the GIL is handed over. "
        "Time spent there is lost to every thread that needs Python."
    ),
    "lock-contention": (
        "lock-contention: threads blocked in futex on the same address wait for one "
        "lock (a threading.Lock, a condition); only the holder makes progress."
    ),
    "fd-leak": (
        "fd-leak: every file and socket is an entry in the process's fd table; fds "
        "opened and never closed pile up until open() or socket() fail (the usual "
        "limit is 1024)."
    ),
    "cpu-oversubscribed": (
        "cpu-oversubscribed: a runnable thread with no free CPU waits in the run "
        "queue; the kernel counts that time (schedstat run delay)."
    ),
    "slow-io": (
        "slow-io: a thread blocked reading or writing one socket, pipe or file, or "
        "waiting for a child, sleeps until that one thing is ready."
    ),
}
# The report sections whose concept passage a kind needs; the others say
# where their background is written instead of repeating it.
KIND_SECTIONS = {
    "gil-contention": {"gil", "cpu"},
    "lock-contention": {"sleep"},
    "fd-leak": {"fds"},
    "cpu-oversubscribed": {"switches", "cpu"},
    "slow-io": {"sleep", "epoll"},
}
DOC = "docs/findings.md"


def sec_findings(findings: list[dict[str, Any]], profiles: list[dict[str, Any]] = ()) -> Section:
    kinds = sorted({f["kind"] for f in findings})
    sec = Section(
        "findings",
        "Findings",
        [KIND_CONCEPTS.get(k, k) for k in kinds]
        + [f"How each finding is decided, its thresholds and limits: {DOC}."],
    )
    for p in profiles:  # --profile: where the time went, function by function
        parts: list[Any] = [f"py-spy profile of PID {p.get('pid')}: "]
        for key, what in (("flamegraph", "flame graph"), ("speedscope", "speedscope")):
            if p.get(key):
                parts += [V(what, href=Path(p[key]).resolve().as_uri()), " "]
        sec.say(*parts, "(", V(str(Path(p.get("flamegraph") or "").parent), code=True), ").")
    if not findings:
        sec.say(
            "No finding: no GIL or lock contention, fd leak, CPU oversubscription or "
            "long I/O wait crossed its threshold in this run (",
            DOC,
            ").",
        )
        return sec
    sec.body.append(
        Table(
            ["#", "severity", "kind", "what", "who", "when (s)"],
            [
                [
                    i + 1,
                    f["severity"],
                    f["kind"],
                    f["title"],
                    _who(f),
                    f"{f['start_s']:.2f} + {f['duration_s']:.2f}",
                ]
                for i, f in enumerate(findings)
            ],
        )
    )
    for i, f in enumerate(findings):
        sec.say(
            f"{i + 1}. ",
            V(f["severity"].upper()),
            " ",
            V(f["kind"], code=True),
            ": ",
            V(f["title"]),
            ". ",
            V(_who(f)),
            ".",
        )
        sec.body.append(Table(["evidence", "value"], [[k, v] for k, v in f["evidence"].items()]))
        if f.get("resources"):
            keys = [k for k in f["resources"][0] if k != "kind"]
            sec.body.append(Table(keys, [[r.get(k, "") for k in keys] for r in f["resources"]]))
        stacks = {"stack": f["stack"], **{k: v for k, v in f["stacks"].items() if k != "waiter"}}
        for name, lines in stacks.items():
            if lines:
                sec.say(f"Python {name} (innermost first):")
                sec.body.append(Table(["frame"], [[V(line, code=True)] for line in lines[:12]]))
            elif name == "stack":
                sec.say(
                    "No Python stack of this thread was dumped during it "
                    "(circuit run --dump-interval 0.5 takes more dumps)."
                )
    return sec


def _who(f: dict[str, Any]) -> str:
    who = f"PID {f['pid']}"
    if f.get("tid") is not None:
        who += f", thread {f['tid']} ({f['thread_name']})"
    if f.get("threads"):
        who += f" and {len(f['threads'])} other thread(s)"
    return who


def trim_concepts(sections: list[Section], findings: list[dict[str, Any]]) -> None:
    """Keep the concept passage of the sections the findings need; the
    others point to where it is written (docs/concepts.md)."""
    needed: set[str] = set()
    for f in findings:
        needed |= KIND_SECTIONS.get(f["kind"], set())
    for s in sections:
        # the timeline's passage is its legend: always kept
        if s.id not in ("findings", "threads") and s.id not in needed and s.concept:
            s.concept = [f"Background: docs/concepts.md, “{s.title}”."]
