"""The run report's sections on file descriptors, epoll and tasks.

What the program did with its fd table (files, sockets, an epoll instance),
whether it waited on one socket or on many through epoll, and how many of
its marked tasks overlapped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from circuit.tracer.waits import Classifier

from .. import metrics as M
from ..names import display_name
from .model import Figure, Section, Table, V, num, secs


def sec_fds(run: Any, s: dict[str, Any], pr: pd.DataFrame) -> Section:
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
                    num((int(r.t_ns) - t0) / 1e9, 3),
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


def sec_epoll(s: dict[str, Any], iv: pd.DataFrame, cls: Classifier, pr: pd.DataFrame) -> Section:
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
            V(secs(poll["dur_ns"].sum() / 1e9)),
            " asleep in readiness waits (wait reason poll) and ",
            V(secs(sock["dur_ns"].sum() / 1e9)),
            " blocked on a single socket (wait reason socket).",
        )
        if len(poll):
            by = M.time_by_syscall(poll).sort_values("seconds", ascending=False).iloc[0]
            py = {(t["pid"], t["tid"]): t.get("python_name") for t in s["threads"]}
            sec.say(
                "Longest poller: thread ",
                V(int(by["tid"])),
                " (",
                V(display_name(by["name"], py.get((int(by["pid"]), int(by["tid"])))), code=True),
                ") waited ",
                V(secs(by["seconds"])),
                " in ",
                V(cls.syscall_name(int(by["syscall"])) or "poll", code=True),
                " and used ",
                V(secs(by["cpu_s"])),
                " of CPU meanwhile.",
            )
    return sec


def sec_tasks(marks: pd.DataFrame, t0: int) -> Section:
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
        V(secs(float(done["dur_s"].median())) if len(done) else "n/a"),
        ".",
    )
    rows = [
        [
            r.task,
            int(r.pid),
            int(r.tid),
            num((r.start_ns - t0) / 1e9),
            "" if pd.isna(r.end_ns) else num((r.end_ns - t0) / 1e9),
            "" if pd.isna(r.dur_s) else num(r.dur_s),
        ]
        for r in spans.head(30).itertuples()
    ]
    sec.body.append(Table(["task", "pid", "tid", "start (s)", "end (s)", "duration (s)"], rows))
    return sec
