"""The run report: its facts and the sections on what the threads did.

Each section puts one of the article's concepts (a blocked thread is put to
sleep, context switches, CPU time and parallelism, the GIL) beside evidence
measured in this run; a section whose data is missing says so.  The fd table,
epoll and task sections are in :mod:`.run_io_sections`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from circuit.tracer.waits import Classifier

from .. import metrics as M
from ..summary import summarize_frames
from .findings_section import sec_findings, trim_concepts
from .loop_sections import sec_loops
from .model import Document, Figure, Inline, Section, Table, V, num, secs
from .run_io_sections import sec_epoll, sec_fds, sec_tasks

# The facts table's rows, in order (fact_values' keys).
RUN_FACTS = [
    "command",
    "mode",
    "exit code",
    "started",
    "wall time",
    "CPU time",
    "parallelism (CPU / wall)",
    "CPUs on this machine",
    "samples",
    "longest gap between samples",
    "processes / threads seen",
    "sampler CPU",
    "host",
]


def fact_values(meta: dict[str, Any], s: dict[str, Any]) -> dict[str, V]:
    """A run's facts from its meta and summary, by label (a report shows
    some of them, in its own order)."""
    return {
        "command": V(" ".join(meta.get("command") or []) or "(attached process)", code=True),
        "mode": V(meta.get("mode")),
        "exit code": V(meta.get("exit_code")),
        "started": V(meta.get("start_time")),
        "wall time": V(secs(s["wall_s"])),
        "CPU time": V(
            f"{secs(s['cpu_s'])} (user {secs(s['cpu_user_s'])}, system {secs(s['cpu_system_s'])})"
        ),
        "parallelism (CPU / wall)": V(num(s["parallelism"], 2)),
        "CPUs on this machine": V(meta.get("cpus")),
        "samples": V(
            f"{s['samples']} at {s['rate_hz']:.1f} Hz, {s['thread_samples']} thread samples"
        ),
        "processes / threads seen": V(f"{len(s['processes'])} / {len(s['threads'])}"),
        "sampler CPU": V(secs(float(meta.get("sampler_cpu_s") or 0.0))),
        "host": V(
            f"{meta.get('host')} · {meta.get('system')} {meta.get('kernel')} · Python {meta.get('python_version')}"
        ),
    }


def _syscall_names(machine: str | None) -> Classifier:
    return Classifier(machine)


def run_document(run: Any) -> Document:
    meta = run.meta
    th, pr, procs = run.threads, run.processes, run.procs
    marks = run.marks
    # The GIL figures are the summary's: one model (analysis/gil.py) for
    # `circuit summary`, this report and the bench.
    s = summarize_frames(
        meta,
        th,
        pr,
        procs,
        maps=getattr(run, "maps", None),
        gil=getattr(run, "gil", None),
        stacks=getattr(run, "stacks", None),
        fds=getattr(run, "fds", None),
        exits=getattr(run, "exits", None),
    )
    per = M.run_period(meta)
    t0 = M.start_ns(meta, th, pr)
    iv = M.state_intervals(th, per)
    cls = _syscall_names(meta.get("machine"))

    facts = fact_values(meta, s)
    facts["longest gap between samples"] = V(_gap(pr, per))
    facts = Table(["", ""], [[k, facts[k]] for k in RUN_FACTS])
    # Computed once here, shared by the sections and their plots.
    rates = M.thread_rates(th, per, t0)
    findings = s.get("findings") or []
    sections = [
        sec_findings(findings, s.get("profiles") or []),
        _sec_timeline(run, s, iv),
        sec_loops(run, s["wall_s"]),
        _sec_sleep(s, iv, cls),
        _sec_ctx(run, s, rates),
        _sec_cpu(run, s, rates),
        _sec_gil(run, s, th, per),
        sec_fds(run, s, pr),
        sec_epoll(s, iv, cls, pr),
        sec_tasks(marks, t0),
    ]
    trim_concepts(sections, findings)
    warnings = [*(s.get("warnings") or []), *getattr(run, "load_warnings", [])]
    return Document(
        title="circuit report",
        subtitle=["Run ", V(str(getattr(run, "path", "")), code=True)],
        facts=facts,
        sections=sections,
        warnings=warnings,
    )


def _gap(pr: pd.DataFrame, per: int) -> str:
    """The longest stretch with no sample: on a starved machine the sampler
    falls behind, and whatever happened in a gap was not seen."""
    t = np.unique(pr["t_ns"].to_numpy()) if len(pr) else np.array([])
    if len(t) < 2:
        return "n/a"
    gap = float(np.diff(t).max()) / 1e9
    note = (
        " (sampler fell behind: states in this gap were not observed)"
        if gap > 5 * per / 1e9
        else ""
    )
    return secs(gap) + note


def _sec_timeline(run: Any, s: dict[str, Any], iv: pd.DataFrame) -> Section:
    from .. import plots

    sec = Section(
        "threads",
        "What every thread was doing",
        [
            "Each lane is one kernel thread. The colour says what the kernel reported "
            "for it at each sample: running (on a CPU or waiting for one), or the reason "
            "it was asleep — a timer (sleep), a lock, the GIL, an event loop's poll, a "
            "single socket, a pipe, the disk, or a child process. Black bars mark tasks "
            "(task-start → task-end marks).",
        ],
    )
    if not s["threads"]:
        sec.missing("no thread samples were recorded.")
        return sec
    sec.body.append(
        Figure("timeline", plots.timeline(run, intervals=iv), "Thread states over time")
    )
    rows = []
    for t in sorted(s["threads"], key=lambda t: -t["cpu_s"])[:30]:
        total = sum(t["time_by_wait"].values()) or 1.0
        top = sorted(((v, k) for k, v in t["time_by_wait"].items() if v > 0), reverse=True)[:3]
        rows.append(
            [
                t["pid"],
                t["tid"],
                t["name"] + (f" ({t['python_name']})" if t.get("python_name") else ""),
                num(t["cpu_s"]),
                f"{t['ctx_voluntary']} / {t['ctx_involuntary']}",
                ", ".join(f"{k} {100 * v / total:.0f}%" for v, k in top),
            ]
        )
    sec.body.append(
        Table(
            ["pid", "tid", "name (Python name)", "CPU s", "switches vol / invol", "time went to"],
            rows,
        )
    )
    if len(s["threads"]) > 30:
        sec.say(f"(the 30 busiest of {len(s['threads'])} threads are listed)")
    return sec


def _sec_sleep(s: dict[str, Any], iv: pd.DataFrame, cls: Classifier) -> Section:
    sec = Section(
        "sleep",
        "The kernel puts a blocked thread to sleep",
        [
            "When a thread asks for something that is not ready yet — a timer, data on a "
            "socket, a lock someone else holds — the kernel does not let it spin. It marks "
            "the thread as sleeping (state S), takes it off the CPU and only makes it "
            "runnable again when the thing it waits for happens. A sleeping thread costs "
            "no CPU time, which is why a thread that waits 4 s for an API call uses almost "
            "no CPU — and why the CPU is free for other threads meanwhile.",
        ],
    )
    if iv.empty:
        sec.missing("no thread samples were recorded.")
        return sec
    # Asleep = S (interruptible), D (uninterruptible) or I (idle); a zombie's
    # last sample is neither running nor asleep.
    asleep = iv[iv["state"].isin(["S", "D", "I"])]
    total = iv["dur_ns"].sum() / 1e9
    off = asleep["dur_ns"].sum() / 1e9
    sec.say(
        "Across ",
        V(len(s["threads"])),
        " thread(s), ",
        V(secs(off)),
        " of ",
        V(secs(total)),
        " sampled thread time (",
        V(f"{100 * off / total:.0f}%" if total else "0%"),
        ") was spent asleep, off the CPU.",
    )
    if asleep.empty:
        sec.say("No thread was ever seen asleep in this run: every sample found it running.")
        return sec
    by = M.time_by_syscall(asleep)
    top = by.sort_values("seconds", ascending=False).head(3)
    cpu_of = {(t["pid"], t["tid"]): t["cpu_s"] for t in s["threads"]}
    for _, r in top.iterrows():
        sc = cls.syscall_name(int(r["syscall"])) or "(no syscall: " + r["wait"] + ")"
        sec.say(
            "Thread ",
            V(int(r["tid"])),
            " (",
            V(r["name"], code=True),
            ") slept ",
            V(secs(r["seconds"])),
            " in ",
            V(sc, code=True),
            " (wait reason ",
            V(r["wait"]),
            ") and used ",
            V(secs(r["cpu_s"])),
            " of CPU meanwhile; ",
            V(secs(cpu_of.get((int(r["pid"]), int(r["tid"])), 0.0))),
            " of CPU over its whole life.",
        )
    return sec


def _sec_ctx(run: Any, s: dict[str, Any], rates: pd.DataFrame) -> Section:
    from .. import plots

    sec = Section(
        "switches",
        "Context switches",
        [
            "A context switch is the kernel taking one thread off a CPU and putting another "
            "on. It is voluntary when the thread blocks — it sleeps on a timer, a lock or "
            "I/O and gives the CPU up itself — and involuntary when the scheduler preempts a "
            "thread that still wanted to run, because its time slice ran out and another "
            "runnable thread was waiting. Many voluntary switches mean a thread waits a lot; "
            "many involuntary ones mean more runnable threads than CPUs.",
        ],
    )
    if not s["threads"]:
        sec.missing("no thread samples were recorded.")
        return sec
    vol = sum(t["ctx_voluntary"] for t in s["threads"])
    inv = sum(t["ctx_involuntary"] for t in s["threads"])
    delay = sum(t["run_delay_s"] for t in s["threads"])
    sec.say(
        "The threads of this run were switched out ",
        V(vol),
        " times voluntarily and ",
        V(inv),
        " times involuntarily; together they waited ",
        V(secs(delay)),
        " runnable but not running (run-queue delay).",
    )
    tv = max(s["threads"], key=lambda t: t["ctx_voluntary"])
    ti = max(s["threads"], key=lambda t: t["ctx_involuntary"])
    if tv["ctx_voluntary"]:
        sec.say(
            "Most voluntary: thread ",
            V(tv["tid"]),
            " (",
            V(tv["name"], code=True),
            ") with ",
            V(tv["ctx_voluntary"]),
            ".",
        )
    if ti["ctx_involuntary"]:
        sec.say(
            "Most involuntary: thread ",
            V(ti["tid"]),
            " (",
            V(ti["name"], code=True),
            ") with ",
            V(ti["ctx_involuntary"]),
            ".",
        )
    sec.body.append(
        Figure("switches", plots.context_switches(run, rates=rates), "Context switches per second")
    )
    return sec


def _sec_cpu(run: Any, s: dict[str, Any], rates: pd.DataFrame) -> Section:
    from .. import plots

    sec = Section(
        "cpu",
        "CPU time and parallelism",
        [
            "Wall time is what a clock on the wall measures; CPU time is how long threads "
            "actually ran on a CPU. Their ratio is the parallelism: 1.0 means one CPU busy "
            "all the time, below 1 the program mostly waited, above 1 several CPUs worked at "
            "once — which pure-Python threads cannot do while they need the GIL.",
        ],
    )
    if not s["processes"] and not s["threads"]:
        sec.missing("no CPU samples were recorded.")
        return sec
    sec.say(
        "Wall ",
        V(secs(s["wall_s"])),
        ", CPU ",
        V(secs(s["cpu_s"])),
        ": parallelism ",
        V(num(s["parallelism"], 2)),
        " on a machine with ",
        V(run.meta.get("cpus", "?")),
        " CPUs.",
    )
    if s["threads"]:
        t = max(s["threads"], key=lambda t: t["cpu_s"])
        sec.say(
            "The busiest thread was ",
            V(t["tid"]),
            " (",
            V(t["name"], code=True),
            "): ",
            V(secs(t["cpu_s"])),
            " of CPU.",
        )
    only = s.get("threads_seen_only_at_exit") or 0
    if only:
        sec.say(
            V(only),
            " threads lived and died between two samples: their CPU comes from the kernel's "
            "exit records, as does every exited thread's final count.",
        )
    elif s.get("exits_source") not in (None, "taskstats") and s.get("threads_missed_at_most"):
        sec.say(
            "Up to ",
            V(s["threads_missed_at_most"]),
            " threads and processes may have lived between two samples unseen (circuit ran "
            "without the kernel's exit records, which need root).",
        )
    sec.body.append(Figure("cpu", plots.cpu(run, rates=rates), "CPU per thread and process total"))
    return sec


def _sec_gil(run: Any, s: dict[str, Any], th: pd.DataFrame, per: int) -> Section:
    from .. import plots
    from ..gil import holder_note, holder_runs, holder_timeline

    sec = Section(
        "gil",
        "The GIL",
        [
            "CPython's global interpreter lock lets only one thread execute Python bytecode "
            "at a time. A thread that waits for I/O, or runs C code that releases the lock "
            "(hashing, compression), lets the others run Python meanwhile; threads that need "
            "the GIL take turns. A thread waiting for the GIL sleeps on a futex inside the "
            "interpreter (wait reason gil); a thread running or queued for a CPU is not "
            "waiting for the GIL. Contention is the share of the Python threads' time spent "
            "waiting for it. Who holds it is read from the interpreter's memory where "
            "circuit can (source interpreter); elsewhere it is not known (source futex).",
        ],
    )
    g = s.get("gil") or {}
    procs = [p for p in g.get("processes") or [] if p["threads"]]
    if not procs:
        sec.say("No GIL data in this run: no thread of a Python process was seen running Python.")
        lock = th[th["wait"].astype(str) == "lock"] if len(th) else th
        if len(lock):
            lock_s = M.time_by(M.with_durations(th, per), "wait").get("lock", 0.0).sum()
            sec.say(
                "Threads spent ",
                V(secs(lock_s)),
                " asleep on locks (wait reason lock: futex "
                "waits not attributed to the GIL; without GIL classification these include "
                "any GIL waits).",
            )
        return sec
    sec.body.append(
        Table(
            [
                "process",
                "source",
                "threads",
                "thread time",
                "GIL wait",
                "contention",
                "GIL held",
                "hand-offs/s",
            ],
            [
                [
                    p["pid"],
                    p["source"],
                    p["threads"],
                    secs(p["thread_s"]),
                    secs(p["wait_s"]),
                    _c(p["contention"]),
                    "not measured" if p["held_s"] is None else secs(p["held_s"]),
                    "not measured" if p["switches_per_s"] is None else num(p["switches_per_s"], 1),
                ]
                for p in procs
            ],
        )
    )
    for p in procs:
        parts: list[Inline] = [
            "Process ",
            V(p["pid"]),
            ": its ",
            V(p["threads"]),
            " threads that ran Python spent ",
            V(secs(p["wait_s"])),
            " of their ",
            V(secs(p["thread_s"])),
            " waiting for the GIL (contention ",
            V(_c(p["contention"])),
            ").",
        ]
        if p["held_s"] is not None:
            parts += [
                " The interpreter says the GIL was held ",
                V(secs(p["held_s"])),
                " (",
                V(f"{100 * (p['held_share'] or 0):.0f}%"),
                " of the time)",
            ]
            if p["switches_per_s"] is not None:
                parts += [" and changed hands ", V(num(p["switches_per_s"], 1)), " times a second"]
            parts.append(".")
        else:
            parts += [
                " Who held it is not known: ",
                V(holder_note(run.meta, p["pid"])),
                ".",
            ]
        sec.say(*parts)
    runs = holder_runs(holder_timeline(getattr(run, "gil", None), th, per))
    held = runs[runs["holder"] >= 0]
    if len(held):
        ms = (held["end_ns"] - held["start_ns"]).to_numpy() / 1e6
        sec.say(
            "The GIL was held in ",
            V(len(held)),
            " stretches by one thread; median ",
            V(f"{np.median(ms):.1f} ms"),
            ", longest ",
            V(f"{ms.max():.1f} ms"),
            " (resolution: one sampling period, ",
            V(f"{per / 1e6:.1f} ms"),
            ").",
        )
    sec.body.append(Figure("gil", plots.gil(run, figures=g), "GIL per thread and hold times"))
    return sec


def _c(contention: float | None) -> str:
    """A contention as the summary's JSON has it (4 decimals)."""
    return "n/a" if contention is None else f"{contention:.4f}"
