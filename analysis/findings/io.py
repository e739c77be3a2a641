"""``slow-io``: long waits on one socket peer, pipe, file or child process.

Rule (docs/findings.md): a wait is a thread's uninterrupted stretch in wait
``socket``, ``pipe``, ``disk`` or ``child`` on one first argument (the fd,
or the child's PID); a long one lasts at least 0.1 s. Long waits are grouped
by process, reason and what they waited on (the fd resolved with the ``fds``
table: the socket's peer, the file's path; the child's command line).
A wait the kernel restarted after a signal (``restart_syscall``, as when a
blocking py-spy dump stops the thread) is joined to the part before it.
Severity from the share of the run's wall time during which at least one
thread was in such a wait: ``warning`` from 20%, ``critical`` from 80%.
Waits whose Python stack is a standard library pool or queue (a worker
process waiting for its next task) are ``info``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .base import (
    LONG_WAIT_S,
    Evidence,
    Finding,
    culprit,
    culprit_line,
    is_idle_stack,
    severity_of,
    spans_of,
    stack_lines,
    wait_intervals,
)

KIND = "slow-io"
REASONS = ("socket", "pipe", "disk", "child")
WARNING, CRITICAL = 0.2, 0.8


# poll(2)/ppoll(2), not epoll: how Python waits on one socket that has a
# timeout (socket.settimeout, urllib/requests timeouts), and how
# subprocess.communicate waits on its pipes. An event loop uses epoll.
POLL_CALLS = ("poll", "ppoll")


def find(ev: Evidence) -> list[Finding]:
    from circuit.tracer.waits import Classifier

    names = Classifier(ev.meta.get("machine")).syscall_name
    iv = _restarts_joined(wait_intervals(ev.samples, (*REASONS, "poll")), names, ev.period)
    long = iv[iv["dur_ns"] >= LONG_WAIT_S * 1e9].copy()
    if len(long):
        is_poll = long["wait"].to_numpy() == "poll"
        calls = np.array([names(int(x)) for x in long["syscall"].to_numpy()])
        long = long[~is_poll | np.isin(calls, POLL_CALLS)].copy()
    if long.empty:
        return []
    long["what"] = _resolve(ev, long)
    # a poll resolved to a socket peer is a wait on that socket
    known = (long["wait"] == "poll") & ~long["what"].str.startswith("poll")
    long.loc[known, "wait"] = "socket"
    wall = float(ev.summary.get("wall_s") or ev.meta.get("wall_s") or 0.0)
    if wall <= 0:
        wall = float(long["end_ns"].max() - long["start_ns"].min()) / 1e9
    out: list[Finding] = []
    for (pid, wait, what), g in long.groupby(["pid", "wait", "what"], sort=False):
        pid = int(pid)
        total = float(g["dur_ns"].sum()) / 1e9
        covered = _union_ns(g) / 1e9
        share = covered / wall if wall else 0.0
        per = g.groupby("tid")["dur_ns"].sum().sort_values(ascending=False)
        tid, frames = _waiting_code(ev, pid, g, [int(t) for t in per.index])
        idle = is_idle_stack(frames)
        start, end = int(g["start_ns"].min()), int(g["end_ns"].max())
        where = f" in {culprit(frames)}" if frames else ""
        out.append(
            Finding(
                kind=KIND,
                severity="info" if idle else severity_of(share, WARNING, CRITICAL),
                title=(
                    f"slow {wait} I/O{where}: {len(g)} wait(s) of 0.1 s or more on {what} "
                    f"in PID {pid}, {total:.2f} s in all, longest "
                    f"{float(g['dur_ns'].max()) / 1e9:.2f} s"
                ),
                start_s=ev.rel(start),
                duration_s=(end - start) / 1e9,
                pid=pid,
                tid=tid,
                thread_name=ev.name(pid, tid),
                evidence={
                    "waits": len(g),
                    "wait_s": total,
                    "longest_s": float(g["dur_ns"].max()) / 1e9,
                    "mean_s": total / len(g),
                    "covered_s": covered,
                    "share_of_wall": share,
                    "threads_waiting": len(per),
                },
                stack=stack_lines(frames),
                culprit=culprit_line(frames),
                threads=[int(t) for t in per.index if int(t) != tid][:20],
                resources=[{"kind": str(wait), "what": str(what), "count": len(g)}],
                lost_s=0.0 if idle else covered,
            )
        )
    return out


def _restarts_joined(iv: pd.DataFrame, names: Any, period: int) -> pd.DataFrame:
    """Join a wait that the kernel restarted (``restart_syscall``: the
    thread was stopped by a signal mid-wait, as a blocking py-spy dump does)
    to the wait it continues: one wait, the first part's syscall and fd."""
    if iv.empty:
        return iv
    iv = iv.sort_values(["pid", "tid", "start_ns"], kind="stable").reset_index(drop=True)
    calls = [names(int(x)) for x in iv["syscall"].to_numpy()]
    restart = np.array([c == "restart_syscall" for c in calls])
    # an event loop's epoll_wait restarted is not the poll before it going on
    epoll = np.array([c.startswith("epoll") for c in calls])
    same = np.zeros(len(iv), dtype=bool)
    same[1:] = (
        (iv["pid"].to_numpy()[1:] == iv["pid"].to_numpy()[:-1])
        & (iv["tid"].to_numpy()[1:] == iv["tid"].to_numpy()[:-1])
        & (iv["wait"].to_numpy()[1:] == iv["wait"].to_numpy()[:-1])
        & (iv["start_ns"].to_numpy()[1:] - iv["end_ns"].to_numpy()[:-1] <= 2 * period)
    )
    same[1:] &= ~epoll[:-1]
    group = np.cumsum(~(restart & same))
    out = iv.groupby(group, sort=False).agg(
        pid=("pid", "first"),
        tid=("tid", "first"),
        wait=("wait", "first"),
        arg0=("arg0", "first"),
        syscall=("syscall", "first"),
        start_ns=("start_ns", "first"),
        end_ns=("end_ns", "last"),
    )
    out["dur_ns"] = out["end_ns"] - out["start_ns"]
    return out.reset_index(drop=True)


def _waiting_code(ev: Evidence, pid: int, waits: pd.DataFrame, tids: list[int]) -> tuple[int, list]:
    """The first thread (most waiting first) with a dump taken during one of
    its long waits, and that dump; else the top waiter's nearest dump."""
    # a dump on the edge of a wait (its ends are known to one sampling
    # period) can show the code after it: a stack that is not an idle wait wins
    busy = lambda fr: not is_idle_stack(fr)  # noqa: E731
    first: tuple[int, list] | None = None
    for tid in tids:
        mine = waits[waits["tid"] == tid]
        frames = ev.stack_of(pid, tid, spans_of(mine), prefer=busy, nearest=False)
        if frames and busy(frames):
            return tid, frames
        if frames and first is None:
            first = (tid, frames)
    if first is not None:
        return first
    top = waits[waits["tid"] == tids[0]]
    return tids[0], ev.stack_of(pid, tids[0], spans_of(top))


def _union_ns(g: pd.DataFrame) -> int:
    """Wall time covered by at least one of the intervals."""
    a = g["start_ns"].to_numpy()
    b = g["end_ns"].to_numpy()
    order = np.argsort(a)
    a, b = a[order], b[order]
    total, cur_a, cur_b = 0, int(a[0]), int(b[0])
    for x, y in zip(a[1:].tolist(), b[1:].tolist(), strict=True):
        if x > cur_b:
            total += cur_b - cur_a
            cur_a, cur_b = x, y
        else:
            cur_b = max(cur_b, y)
    return total + cur_b - cur_a


def _resolve(ev: Evidence, waits: pd.DataFrame) -> list[str]:
    """What each wait waited on: a socket's peer (or local address), a
    file's path, ``pipe``; the child's command line; ``fd N`` when the fds
    table does not know the fd."""
    out = [f"fd {int(a)}" for a in waits["arg0"]]
    fds = ev.fds
    polled = waits["wait"].to_numpy() == "poll"
    if polled.any():
        lives: dict[int, pd.DataFrame] = {}
        for i in np.flatnonzero(polled):
            r = waits.iloc[i]
            pid = int(r["pid"])
            if pid not in lives:
                lives[pid] = _socket_lives(fds, pid)
            out[i] = _open_peers(lives[pid], int(r["start_ns"]), int(r["end_ns"]))
    child = waits["wait"].to_numpy() == "child"
    if child.any():
        names = _commands(ev)
        for i in np.flatnonzero(child):
            a = int(waits["arg0"].iloc[i])
            out[i] = "any child" if a <= 0 else f"child {a} ({names.get(a, '?')})"
    if fds.empty or "fd" not in fds.columns:
        return out
    from .fds import _what

    f = fds[fds["event"].astype(str).isin(["open", "addr"])].copy()
    f["event"] = f["event"].astype(str)
    f = f.sort_values("t_ns", kind="stable")
    # a socket opened before it had an address gets it in a later `addr` row:
    # take the latest row of that fd's life (open, then its addr) up to the wait's end
    rows = waits.reset_index(drop=True).assign(row_i=np.arange(len(waits)))
    rows = rows[~child & ~polled]
    left = rows.sort_values("end_ns").assign(
        t_ns=lambda d: d["end_ns"].astype("int64"),
        pid=lambda d: d["pid"].astype("int64"),
        fd=lambda d: d["arg0"].astype("int64"),
    )
    right = f.assign(pid=f["pid"].astype("int64"), fd=f["fd"].astype("int64"))
    right = right[["t_ns", "pid", "fd", "kind", "target", "proto", "local", "remote"]]
    j = pd.merge_asof(
        left[["t_ns", "pid", "fd", "row_i"]],
        right.assign(t_ns=right["t_ns"].astype("int64")),
        on="t_ns",
        by=["pid", "fd"],
        direction="backward",
    )
    for r in j.itertuples(index=False):
        if isinstance(r.kind, str) and r.kind:
            out[int(r.row_i)] = _what(r) if r.kind != "pipe" else f"pipe {r.target}"
    return out


def _open_peers(lives: pd.DataFrame, a: int, b: int) -> str:
    """What a ``poll`` on an unknown fd most likely waited for: the peer of
    the process's connected socket opened last before the wait ended, else
    ``poll (fd unknown)``."""
    if lives.empty:
        return "poll (fd unknown)"
    live = lives[(lives["t_ns"] <= b) & (lives["closed_ns"] > a) & (lives["remote"] != "")]
    if live.empty:
        return "poll (fd unknown)"
    # several: a client connects just before it waits, so the socket opened
    # last before the wait is the likeliest
    return str(live.sort_values("t_ns")["remote"].iloc[-1])


def _socket_lives(fds: pd.DataFrame, pid: int) -> pd.DataFrame:
    """Each socket's life in process ``pid``: open t_ns, closed_ns (max int
    when never), remote (from a later ``addr`` row when it had none)."""
    cols = ["t_ns", "closed_ns", "remote"]
    if fds.empty or "fd" not in fds.columns:
        return pd.DataFrame(columns=cols)
    f = fds[(fds["pid"] == pid) & (fds["kind"].astype(str) == "socket")]
    ev = f.assign(event=f["event"].astype(str)).sort_values(["fd", "t_ns"], kind="stable")
    rows = []
    cur: dict[int, list] = {}
    for r in ev.itertuples(index=False):
        fd = int(r.fd)
        if r.event == "open":
            cur[fd] = [int(r.t_ns), np.iinfo(np.int64).max, str(r.remote or "")]
            rows.append(cur[fd])
        elif r.event == "addr" and fd in cur and not cur[fd][2]:
            cur[fd][2] = str(r.remote or "")
        elif r.event == "close" and fd in cur:
            cur[fd][1] = int(r.t_ns)
            del cur[fd]
    return pd.DataFrame(rows, columns=cols)


def _commands(ev: Evidence) -> dict[int, str]:
    procs = ev.summary.get("processes") or []
    return {int(p["pid"]): str(p.get("cmdline") or "")[:60] for p in procs}
