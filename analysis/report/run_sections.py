"""``circuit report``: one self-contained HTML page and a Markdown twin.

The report explains the article's concepts (a blocked thread is put to
sleep, context switches, the GIL, the fd table, non-blocking sockets, epoll)
each beside evidence measured in this run or bench.  Every number comes from
the data; a section whose data is missing says so.

Strings from the traced program (command lines, thread names, paths,
addresses) only ever enter the output through ``V`` values, which each
renderer escapes; section text written here is trusted.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from circuit.tracer.waits import Classifier

from .. import bench as B
from .. import metrics as M
from ..summary import summarize_frames

# Models whose median walls are within this share of the fastest are named
# together: closer than that is run-to-run noise on a shared machine.
TIE_SHARE = 0.05

# -- document model ---------------------------------------------------------------


@dataclass
class V:
    """A value from the data; rendered escaped (``code`` -> monospace)."""

    value: Any
    code: bool = False


Inline = str | V
Para = list[Inline]  # a sentence: trusted text and escaped values


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]  # every cell is data: escaped


@dataclass
class Figure:
    name: str  # file stem for the Markdown twin
    fig: Any  # matplotlib Figure
    caption: str


@dataclass
class Section:
    id: str
    title: str
    concept: list[str] = field(default_factory=list)  # trusted prose
    body: list[Para | Table | Figure] = field(default_factory=list)

    def say(self, *parts: Inline) -> None:
        self.body.append(list(parts))

    def missing(self, what: str) -> None:
        self.body.append(["Not measured in this run: " + what])


@dataclass
class Document:
    title: str
    subtitle: list[Inline]
    facts: Table
    sections: list[Section]
    warnings: list[str]


def _n(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def _s(x: float) -> str:
    """Seconds, readably: 3 significant decimals for sub-second values."""
    if x == 0:
        return "0 s"
    if x >= 10:
        return f"{x:.1f} s"
    if x >= 0.01:
        return f"{x:.3f} s"
    return f"{x * 1000:.2f} ms"


# -- run report -----------------------------------------------------------------


def _syscall_names(machine: str | None) -> Classifier:
    return Classifier(machine)


def run_document(run: Any) -> Document:
    meta = run.meta
    th, pr, procs = run.threads, run.processes, run.procs
    marks = run.marks
    # The GIL figures are the summary's: one model (analysis/gil.py) for
    # `circuit summary`, this report and the bench.
    s = summarize_frames(
        meta, th, pr, procs, maps=getattr(run, "maps", None), gil=getattr(run, "gil", None)
    )
    per = M.run_period(meta)
    t0 = M.start_ns(meta, th, pr)
    iv = M.state_intervals(th, per)
    cls = _syscall_names(meta.get("machine"))
    cmd = " ".join(meta.get("command") or []) or "(attached process)"

    facts = Table(
        ["", ""],
        [
            ["command", V(cmd, code=True)],
            ["mode", V(meta.get("mode"))],
            ["exit code", V(meta.get("exit_code"))],
            ["started", V(meta.get("start_time"))],
            ["wall time", V(_s(s["wall_s"]))],
            [
                "CPU time",
                V(f"{_s(s['cpu_s'])} (user {_s(s['cpu_user_s'])}, system {_s(s['cpu_system_s'])})"),
            ],
            ["parallelism (CPU / wall)", V(_n(s["parallelism"], 2))],
            ["CPUs on this machine", V(meta.get("cpus"))],
            [
                "samples",
                V(f"{s['samples']} at {s['rate_hz']:.1f} Hz, {s['thread_samples']} thread samples"),
            ],
            ["longest gap between samples", V(_gap(pr, per))],
            ["processes / threads seen", V(f"{len(s['processes'])} / {len(s['threads'])}")],
            ["sampler CPU", V(_s(float(meta.get("sampler_cpu_s") or 0.0)))],
            [
                "host",
                V(
                    f"{meta.get('host')} · {meta.get('system')} {meta.get('kernel')} · Python {meta.get('python_version')}"
                ),
            ],
        ],
    )
    # Computed once here, shared by the sections and their plots.
    rates = M.thread_rates(th, per, t0)
    sections = [
        _sec_timeline(run, s, iv),
        _sec_sleep(s, iv, cls),
        _sec_ctx(run, s, rates),
        _sec_cpu(run, s, rates),
        _sec_gil(run, s, th, per),
        _sec_fds(run, s, pr),
        _sec_epoll(s, iv, cls, pr),
        _sec_tasks(marks, t0),
    ]
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
    return _s(gap) + note


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
                t["name"],
                _n(t["cpu_s"]),
                f"{t['ctx_voluntary']} / {t['ctx_involuntary']}",
                ", ".join(f"{k} {100 * v / total:.0f}%" for v, k in top),
            ]
        )
    sec.body.append(
        Table(["pid", "tid", "name", "CPU s", "switches vol / invol", "time went to"], rows)
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
        V(_s(off)),
        " of ",
        V(_s(total)),
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
            V(_s(r["seconds"])),
            " in ",
            V(sc, code=True),
            " (wait reason ",
            V(r["wait"]),
            ") and used ",
            V(_s(r["cpu_s"])),
            " of CPU meanwhile; ",
            V(_s(cpu_of.get((int(r["pid"]), int(r["tid"])), 0.0))),
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
        V(_s(delay)),
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
        V(_s(s["wall_s"])),
        ", CPU ",
        V(_s(s["cpu_s"])),
        ": parallelism ",
        V(_n(s["parallelism"], 2)),
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
            V(_s(t["cpu_s"])),
            " of CPU.",
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
            lock_s = M.with_durations(th, per)
            lock_s = lock_s[lock_s["wait"].astype(str) == "lock"]["dt_ns"].sum() / 1e9
            sec.say(
                "Threads spent ",
                V(_s(lock_s)),
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
                    _s(p["thread_s"]),
                    _s(p["wait_s"]),
                    _c(p["contention"]),
                    "not measured" if p["held_s"] is None else _s(p["held_s"]),
                    "not measured" if p["switches_per_s"] is None else _n(p["switches_per_s"], 1),
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
            V(_s(p["wait_s"])),
            " of their ",
            V(_s(p["thread_s"])),
            " waiting for the GIL (contention ",
            V(_c(p["contention"])),
            ").",
        ]
        if p["held_s"] is not None:
            parts += [
                " The interpreter says the GIL was held ",
                V(_s(p["held_s"])),
                " (",
                V(f"{100 * (p['held_share'] or 0):.0f}%"),
                " of the time)",
            ]
            if p["switches_per_s"] is not None:
                parts += [" and changed hands ", V(_n(p["switches_per_s"], 1)), " times a second"]
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


def _sec_fds(run: Any, s: dict[str, Any], pr: pd.DataFrame) -> Section:
    from .. import plots

    sec = Section(
        "fds",
        "The file descriptor table",
        [
            "Every I/O object a process uses — files, sockets, pipes, an epoll instance — "
            "is an entry in its file descriptor table, and the program refers to it by a "
            "small integer, the fd. A socket is an fd like a file is, so the table shows "
            "how many connections a program really had open and when.",
        ],
    )
    if not s["processes"]:
        sec.missing("no process samples (fd counts) were recorded.")
        return sec
    rows = []
    for p in s["processes"]:
        kinds = ", ".join(f"{k} {v}" for k, v in p["fds_peak_by_kind"].items() if v)
        rows.append([p["pid"], p["cmdline"][:80], p["fds_peak"], kinds])
    sec.body.append(Table(["pid", "command", "peak open fds", "peak by kind"], rows))
    sec.body.append(Figure("fds", plots.fds(run), "Open fds by kind over time"))
    fd = run.fds
    if len(fd) and "kind" in fd.columns:
        socks = fd[(fd["event"].astype(str) == "open") & (fd["kind"].astype(str) == "socket")]
        if len(socks):
            socks = socks.drop_duplicates(["pid", "fd", "local", "remote"])
            t0 = M.start_ns(run.meta, pr)
            rows = [
                [
                    _n((int(r.t_ns) - t0) / 1e9, 3),
                    int(r.pid),
                    int(r.fd),
                    r.proto or "",
                    r.local or "",
                    r.remote or "",
                ]
                for r in socks.head(20).itertuples()
            ]
            sec.say(
                "Sockets seen opening (first ", V(min(20, len(socks))), " of ", V(len(socks)), "):"
            )
            sec.body.append(Table(["t (s)", "pid", "fd", "proto", "local", "remote"], rows))
    return sec


def _sec_epoll(s: dict[str, Any], iv: pd.DataFrame, cls: Classifier, pr: pd.DataFrame) -> Section:
    sec = Section(
        "epoll",
        "Non-blocking sockets and epoll",
        [
            "A blocking socket read puts its thread to sleep until that one socket has data, "
            "so serving many sockets that way needs many threads. An event loop (asyncio) "
            "instead makes every socket non-blocking and hands the whole set to the kernel's "
            "readiness API — epoll on Linux. One thread then sleeps in a single epoll_wait "
            "until any of the sockets is ready, and the loop runs whichever coroutine can make "
            "progress. The evidence: an epoll fd in the fd table, many sockets, and a thread "
            "whose sleep reason is poll rather than socket.",
        ],
    )
    peaks = M.fd_peaks(pr)
    if peaks.empty:
        sec.missing("no process samples (fd counts) were recorded.")
        return sec
    ep = int(peaks["epoll"].max()) if "epoll" in peaks else 0
    so = int(peaks["socket"].max()) if "socket" in peaks else 0
    for pid, r in peaks.iterrows():
        if r.get("epoll", 0) or r.get("socket", 0):
            sec.say(
                "Process ",
                V(int(pid)),
                " held ",
                V(int(r.get("epoll", 0))),
                " epoll fd(s) and ",
                V(int(r.get("socket", 0))),
                " socket(s) at peak.",
            )
    if not ep and not so:
        sec.say("No epoll fd and no socket was open in this run: it did no network I/O.")
    elif not ep:
        sec.say("No epoll fd was open: the sockets were used without an event loop.")
    if len(iv):
        poll = iv[iv["wait"] == "poll"]
        sock = iv[iv["wait"] == "socket"]
        sec.say(
            "Threads spent ",
            V(_s(poll["dur_ns"].sum() / 1e9)),
            " asleep in readiness waits (wait reason poll) and ",
            V(_s(sock["dur_ns"].sum() / 1e9)),
            " blocked on a single socket (wait reason socket).",
        )
        if len(poll):
            by = M.time_by_syscall(poll).sort_values("seconds", ascending=False).iloc[0]
            sec.say(
                "Longest poller: thread ",
                V(int(by["tid"])),
                " (",
                V(by["name"], code=True),
                ") waited ",
                V(_s(by["seconds"])),
                " in ",
                V(cls.syscall_name(int(by["syscall"])) or "poll", code=True),
                " and used ",
                V(_s(by["cpu_s"])),
                " of CPU meanwhile.",
            )
    return sec


def _sec_tasks(marks: pd.DataFrame, t0: int) -> Section:
    sec = Section(
        "tasks",
        "Tasks",
        [
            "Workloads mark each unit of work with circuit.mark('task-start', task=…) and "
            "circuit.mark('task-end', task=…). How many tasks overlapped is the concurrency "
            "the program really achieved.",
        ],
    )
    spans = M.task_spans(marks)
    if spans.empty:
        sec.missing("the program recorded no task-start / task-end marks.")
        return sec
    done = spans.dropna(subset=["end_ns"])
    # Peak overlap: +1 at each start, -1 at each end, in time order.
    ev = np.r_[done["start_ns"].to_numpy(), done["end_ns"].to_numpy()]
    step = np.r_[np.ones(len(done)), -np.ones(len(done))]
    order = np.lexsort((step, ev))
    peak = int(np.cumsum(step[order]).max()) if len(done) else 0
    sec.say(
        V(len(spans)),
        " tasks (",
        V(len(done)),
        " finished), up to ",
        V(peak),
        " in flight at once; median duration ",
        V(_s(float(done["dur_s"].median())) if len(done) else "n/a"),
        ".",
    )
    rows = [
        [
            r.task,
            int(r.pid),
            int(r.tid),
            _n((r.start_ns - t0) / 1e9),
            "" if pd.isna(r.end_ns) else _n((r.end_ns - t0) / 1e9),
            "" if pd.isna(r.dur_s) else _n(r.dur_s),
        ]
        for r in spans.head(30).itertuples()
    ]
    sec.body.append(Table(["task", "pid", "tid", "start (s)", "end (s)", "duration (s)"], rows))
    return sec


# -- bench report -------------------------------------------------------------------


def _and(words: list[str]) -> str:
    """a, b and c"""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _models_title(models: list[str]) -> str:
    """The comparison's heading from the models actually run, in the article's order."""
    if not models:
        return "Concurrency models"
    if len(models) == 1:
        return f"One model: {models[0]}"
    t = " vs ".join(models)
    return t[0].upper() + t[1:]


def _tasks(n: Any) -> str:
    return f"{int(n)} task" + ("" if int(n) == 1 else "s")


def _cell_name(r: Any) -> Para:
    """`workload` model, N tasks: the words naming one cell of a bench."""
    parts: Para = []
    if "workload" in r:
        parts += [V(r["workload"], code=True), " "]
    parts.append(V(r["model"]))
    if "tasks" in r and pd.notna(r["tasks"]):
        parts += [", ", V(_tasks(r["tasks"]))]
    return parts


def _bench_models(cmp: pd.DataFrame, results: pd.DataFrame) -> Section:
    from .. import plots

    models = (
        B.order_models(pd.DataFrame({"model": results["model"].astype(str).unique()}))[
            "model"
        ].tolist()
        if "model" in results
        else []
    )
    sec = Section(
        "models",
        _models_title(models),
        [
            "The same workload under each concurrency model, side by side: wall time is what "
            "the user waits, CPU time what the machine spent. I/O-bound work gets faster with "
            "any model that overlaps the waiting. CPU-bound Python code only gets faster with "
            "more CPUs running Python at once (processes), because of the GIL; C code that "
            "releases the GIL, such as hashlib on large buffers (cpu-hash), runs on several "
            "CPUs from threads too.",
        ],
    )
    if cmp.empty:
        sec.missing("the results table has no model / wall_s columns.")
        return sec
    cols = [
        c
        for c in ("workload", "model", "tasks", "wall_s", "cpu_s", "parallelism", "runs")
        if c in cmp
    ]
    sec.body.append(
        Table(
            cols,
            [
                [_n(v) if isinstance(v, float) else v for v in r]
                for r in cmp[cols].itertuples(index=False)
            ],
        )
    )
    at = B.compared_cells(cmp)
    sec.body.append(Figure("models", plots.model_comparison(at), "Wall vs CPU time per model"))
    for wk, d in at.groupby("workload") if "workload" in at else [(None, at)]:
        d = d.sort_values("wall_s")
        best = d.iloc[0]
        base = d[d["model"] == "sequential"]
        parts: Para = []
        if wk is not None:
            parts += ["Workload ", V(wk, code=True)]
        if "tasks" in d:
            parts += [" with ", V(_tasks(best["tasks"]))]
        parts.append(": ")
        # Medians within TIE_SHARE of the best are not told apart (the
        # run-to-run spread on a shared machine is larger than that).
        tied = d[d["wall_s"] <= best["wall_s"] * (1 + TIE_SHARE)]["model"].tolist()
        if len(d) == 1:
            parts += ["only ", V(best["model"]), " was run, ", V(_s(best["wall_s"]))]
        elif len(tied) > 1:
            parts += [
                "fastest were ",
                V(_and(list(map(str, tied)))),
                f", within {TIE_SHARE:.0%} of each other, at ",
                V(_s(best["wall_s"])),
            ]
        else:
            parts += ["fastest was ", V(best["model"]), " at ", V(_s(best["wall_s"]))]
        if len(base) and best["model"] != "sequential" and best["wall_s"] > 0:
            parts += [
                ", ",
                V(f"{base['wall_s'].iloc[0] / best['wall_s']:.2f}×"),
                " faster than sequential (",
                V(_s(base["wall_s"].iloc[0])),
                ")",
            ]
        if "parallelism" in d:
            parts += [
                "; parallelism per model: ",
                V(
                    ", ".join(
                        f"{m} {p:.2f}" for m, p in zip(d["model"], d["parallelism"], strict=True)
                    )
                ),
            ]
        sec.say(*parts, ".")
    return sec


def _bench_scaling(sc: pd.DataFrame) -> Section:
    from .. import plots

    sec = Section(
        "scaling",
        "Scaling with the number of tasks",
        [
            "How wall time grows as tasks are added, per model. A flat line means the model "
            "overlaps the tasks; a line rising in proportion means they ran one after another. "
            "On a machine with C cores, CPU work that runs in parallel stays flat up to C tasks, "
            "then rises."
        ],
    )
    if sc.empty:
        sec.missing("no workload and model of this bench ran at two or more task counts.")
        return sec
    sec.body.append(Figure("scaling", plots.scaling(sc), "Wall time vs tasks"))
    for key, g in sc.groupby([c for c in ("workload", "model") if c in sc]):
        g = g.sort_values("tasks")
        a, b = g.iloc[0], g.iloc[-1]
        parts: Para = [
            V(" / ".join(map(str, key if isinstance(key, tuple) else (key,)))),
            ": ",
            V(" → ".join(str(int(n)) for n in g["tasks"])),
            " tasks took ",
            V(" → ".join(_s(float(w)) for w in g["wall_s"])),
        ]
        if a["wall_s"] > 0:
            parts += [
                ": ",
                V(f"{b['wall_s'] / a['wall_s']:.1f}×"),
                " the wall time for ",
                V(f"{b['tasks'] / a['tasks']:g}×"),
                " the tasks",
            ]
        sec.say(*parts, ".")
    return sec


def _bench_sleep(split: pd.DataFrame) -> Section:
    from .. import plots

    sec = Section(
        "sleep",
        "The effect of sleep state",
        [
            "The kernel puts a blocked thread to sleep, and a sleeping thread uses no CPU. "
            "Summing every thread's sampled time by what it was doing shows, per model, how much "
            "was spent running and how much asleep — and why: a timer, a lock, the GIL, an "
            "epoll wait, a single socket. Against it, the CPU actually used (black diamonds): "
            "running counts threads in state R, which includes runnable threads waiting for a "
            "CPU, so on a busy machine it exceeds the CPU used."
        ],
    )
    if split.empty:
        sec.missing("no run folder of this bench could be read.")
        return sec
    # The figure has one bar per model: the task count the models were compared at.
    shown = B.compared_cells(split)
    caption = "Thread time by state, per model"
    if "tasks" in shown and shown["tasks"].nunique() == 1:
        caption += f" ({int(shown['tasks'].iloc[0])} tasks)"
    elif "tasks" in shown:
        caption += " (per workload, the task count most models ran)"
    sec.body.append(Figure("sleep", plots.sleep_split(shown), caption))
    wc = [c for c in split.columns if c.startswith("wait_")]
    for _, r in split.iterrows():
        tot = float(r[wc].sum())
        run_s = float(r.get("wait_running_s", 0.0))
        parts: Para = [
            *_cell_name(r),
            ": ",
            V(_s(tot)),
            " of thread time, ",
            V(f"{100 * (tot - run_s) / tot:.0f}%" if tot else "0%"),
            " asleep",
        ]
        top = sorted(
            ((float(r[c]), c[5:-2]) for c in wc if c != "wait_running_s" and r[c] > 0),
            reverse=True,
        )[:2]
        if top:
            parts += [" (mostly ", V(", ".join(f"{w} {_s(v)}" for v, w in top)), ")"]
        if "cpu_s" in r:
            parts += ["; CPU used ", V(_s(float(r["cpu_s"])))]
        sec.say(*parts, ".")
    return sec


def bench_document(path: Path, results: pd.DataFrame | None = None) -> Document:
    from .. import plots

    results = B.read_results(path) if results is None else results
    meta = B.bench_meta(path)
    cmp = B.model_comparison(results)
    sc = B.scaling(results)
    runs = B.per_run_waits(results)
    split = B.sleep_split(runs)
    gvt = B.gil_vs_threads(runs)
    facts = Table(
        ["", ""],
        [
            ["results", V(f"{len(results)} runs")],
            [
                "workloads",
                V(
                    ", ".join(map(str, results["workload"].unique()))
                    if "workload" in results
                    else "?"
                ),
            ],
            [
                "models",
                V(", ".join(map(str, results["model"].unique())) if "model" in results else "?"),
            ],
            [
                "task counts",
                V(
                    ", ".join(map(str, sorted(results["tasks"].unique())))
                    if "tasks" in results
                    else "?"
                ),
            ],
            ["run folders readable", V(f"{len(runs)} of {len(results)}")],
            *[[k, V(v)] for k, v in meta.items() if isinstance(v, (str, int, float))][:8],
        ],
    )
    secs = [_bench_models(cmp, results), _bench_scaling(sc), _bench_sleep(split)]

    s4 = Section(
        "gil",
        "The GIL",
        [
            "Only one thread per process runs Python bytecode at a time. Threads that need "
            "the GIL queue for it (wait reason gil); contention is the share of the Python "
            "threads' time spent so. It grows with the number of threads running Python, and "
            "stays near 0 for threads that spend their time in C code that releases the GIL "
            "(hashing, compression), however many there are."
        ],
    )
    if gvt.empty:
        s4.say("No GIL data in this bench: no run had a Python process whose threads ran Python.")
    else:
        # Lines only, when there are any: a model run at one thread count is a lone point.
        drawn = B.lines(gvt, "threads")
        s4.body.append(
            Figure(
                "gil", plots.gil(None, drawn if len(drawn) else gvt), "GIL contention vs threads"
            )
        )
        for _, r in gvt.iterrows():
            s4.say(
                V(r.get("workload", "")),
                " ",
                V(r["model"]),
                " with ",
                V(int(r["threads"])),
                " threads: GIL contention ",
                V(_n(float(r["gil_contention"]), 2)),
                " (",
                V(f"{100 * r['gil_contention']:.0f}%"),
                " of the Python threads' time waiting for the GIL).",
            )
    if not cmp.empty and "parallelism" in cmp and "model" in cmp:
        th = cmp[cmp["model"].astype(str).str.contains("thread")]
        for _, r in th.iterrows():
            s4.say(
                *_cell_name(r),
                ": parallelism ",
                V(_n(float(r["parallelism"]), 2)),
                " (CPU seconds per wall second).",
            )
    secs.append(s4)

    s5 = Section(
        "epoll",
        "File descriptors, non-blocking sockets and epoll",
        [
            "Each socket is an entry in the process's fd table. An event loop registers its "
            "non-blocking sockets with one epoll instance (itself an fd) and sleeps in "
            "epoll_wait for all of them at once."
        ],
    )
    if runs.empty or "sockets_peak" not in runs:
        s5.missing("no run folder with fd counts could be read.")
    else:
        keys = [c for c in ("workload", "model", "tasks") if c in runs]
        g = runs.groupby(keys)[["epoll_peak", "sockets_peak"]].max().reset_index()
        g = g[(g["epoll_peak"] > 0) | (g["sockets_peak"] > 0)]
        if g.empty:
            s5.say("No run of this bench opened a socket or an epoll fd.")
        for _, r in g.iterrows():
            s5.say(
                "The ",
                V(" / ".join(str(r[k]) for k in keys)),
                " run held ",
                V(int(r["epoll_peak"])),
                " epoll fd(s) and ",
                V(int(r["sockets_peak"])),
                " socket(s) at peak.",
            )
    secs.append(s5)

    s6 = Section("runs", "Runs", ["Every run of the bench, as recorded."])
    cols = [
        c
        for c in ("workload", "model", "tasks", "repeat", "wall_s", "cpu_s", "parallelism", "run")
        if c in results
    ]
    s6.body.append(
        Table(
            cols,
            [
                [_n(v) if isinstance(v, float) else v for v in r]
                for r in results[cols].itertuples(index=False)
            ],
        )
    )
    secs.append(s6)
    return Document(
        title="circuit bench report",
        subtitle=["Bench ", V(str(path), code=True)],
        facts=facts,
        sections=secs,
        warnings=[],
    )


# -- rendering ----------------------------------------------------------------------

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;
margin:0 auto;padding:1.5em;color:#222}
h1{margin-bottom:.1em}h2{border-bottom:2px solid #eee;padding-bottom:.2em;margin-top:2em}
.sub{color:#666;margin-top:0}.concept{background:#f6f8fa;border-left:4px solid #9ecae1;
padding:.6em 1em;margin:1em 0}.evidence{margin:.4em 0}
table{border-collapse:collapse;margin:.8em 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}code{background:#f3f3f3;padding:0 3px;border-radius:3px;
word-break:break-all}figure{margin:1em 0}figure img{max-width:100%;height:auto}
figcaption{color:#666;font-size:13px}.missing{color:#a33}nav a{margin-right:1em}
.warn{color:#a60}
"""


def _h(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _inline_html(p: Para) -> str:
    out = []
    for part in p:
        if isinstance(part, V):
            out.append(
                f"<code>{_h(part.value)}</code>" if part.code else f"<b>{_h(part.value)}</b>"
            )
        else:
            out.append(_h(part))
    return "".join(out)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def render_html(doc: Document, pngs: dict[str, bytes]) -> str:
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        # No script may run in the report, whatever ends up in it.
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>{_h(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_h(doc.title)}</h1><p class='sub'>{_inline_html(doc.subtitle)}</p>",
        "<nav>" + "".join(f"<a href='#{s.id}'>{_h(s.title)}</a>" for s in doc.sections) + "</nav>",
        _table_html(doc.facts, header=False),
    ]
    for s in doc.sections:
        out.append(f"<section id='{_h(s.id)}'><h2>{_h(s.title)}</h2>")
        out += [f"<div class='concept'>{_h(c)}</div>" for c in s.concept]
        for b in s.body:
            if isinstance(b, Table):
                out.append(_table_html(b))
            elif isinstance(b, Figure):
                data = base64.b64encode(pngs[b.name]).decode()
                out.append(
                    f"<figure><img alt='{_h(b.caption)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{_h(b.caption)}</figcaption></figure>"
                )
            else:
                cls = (
                    "missing"
                    if b and isinstance(b[0], str) and b[0].startswith("Not measured")
                    else "evidence"
                )
                out.append(f"<p class='{cls}'>{_inline_html(b)}</p>")
        out.append("</section>")
    if doc.warnings:
        out.append("<h2>Warnings</h2><ul>")
        out += [f"<li class='warn'>{_h(w)}</li>" for w in doc.warnings]
        out.append("</ul>")
    out.append(
        "<p class='sub'>Generated by circuit report. Every number above was measured in this run or bench.</p>"
    )
    out.append("</body></html>\n")
    return "\n".join(out)


def _table_html(t: Table, header: bool = True) -> str:
    rows = []
    if header:
        rows.append("<tr>" + "".join(f"<th>{_h(c)}</th>" for c in t.header) + "</tr>")
    for r in t.rows:
        cells = []
        for i, c in enumerate(r):
            tag = "th" if not header and i == 0 else "td"
            body = _inline_html([c]) if isinstance(c, V) else _h(c)
            cells.append(f"<{tag}>{body}</{tag}>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(x: Any) -> str:
    """Escape a data string for Markdown: HTML-escape, then backslash Markdown syntax."""
    s = html.escape(str(x), quote=False).replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", s)


def _md_code(x: Any) -> str:
    # Inside a code span nothing is interpreted; a fence longer than any run of
    # backticks in the value keeps it closed.
    s = str(x).replace("\n", " ")
    ticks = "`" * (max((len(m) for m in re.findall("`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


def _inline_md(p: Para) -> str:
    out = []
    for part in p:
        if isinstance(part, V):
            out.append(_md_code(part.value) if part.code else f"**{_md(part.value)}**")
        else:
            out.append(part)
    return "".join(out)


def _table_md(t: Table, header: bool = True) -> str:
    def cell(c: Any) -> str:
        v = c.value if isinstance(c, V) else c
        return _md(v).replace("|", "\\|")

    head = t.header if header else ["", ""]
    lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in t.rows]
    return "\n".join(lines)


def render_markdown(doc: Document, png_names: dict[str, str]) -> str:
    out = [
        f"# {doc.title}",
        "",
        _inline_md(doc.subtitle),
        "",
        _table_md(doc.facts, header=False),
        "",
    ]
    for s in doc.sections:
        out += [f"## {s.title}", ""]
        out += [f"> {c}" for c in s.concept]
        out.append("")
        for b in s.body:
            if isinstance(b, Table):
                out += [_table_md(b), ""]
            elif isinstance(b, Figure):
                out += [f"![{b.caption}]({png_names[b.name]})", ""]
            else:
                out += [_inline_md(b), ""]
    if doc.warnings:
        out += ["## Warnings", ""] + [f"- {_md(w)}" for w in doc.warnings] + [""]
    return "\n".join(out)


def write_report(target: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Render the report of a run or bench folder; returns (html, markdown) paths."""
    import matplotlib.pyplot as plt

    target = Path(target)
    if B.is_bench(target):
        doc = bench_document(target)
    else:
        from ..run import load

        doc = run_document(load(target))
    html_path = Path(out) if out else target.with_name(target.name + "-report.html")
    if html_path.is_dir():  # -o a folder: the report goes in it
        html_path = html_path / f"{target.resolve().name}-report.html"
    if html_path.suffix.lower() not in (".html", ".htm"):
        html_path = html_path.with_name(html_path.name + ".html")
    md_path = html_path.with_suffix(".md")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, bytes] = {}
    names: dict[str, str] = {}
    for s in doc.sections:
        for b in s.body:
            if isinstance(b, Figure):
                pngs[b.name] = _png(b.fig)
                plt.close(b.fig)
                fname = f"{html_path.stem}-{b.name}.png"
                (html_path.parent / fname).write_bytes(pngs[b.name])
                names[b.name] = fname
    html_path.write_text(render_html(doc, pngs), encoding="utf-8")
    md_path.write_text(render_markdown(doc, names), encoding="utf-8")
    return html_path, md_path
