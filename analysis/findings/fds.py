"""``fd-leak``: a process keeps opening fds of one kind and never closes them.

Rule (docs/findings.md): from the ``fds`` table, each fd the process opened
while traced (not ``initial``) is matched with its close; the ones never
closed before the process's last 0.5 s are kept (at exit the interpreter
and the kernel close everything: those closes are not the program's). Reported per (process, kind)
when at least 20 of them were never closed, they are at least half of that
kind's opens, and they appeared at no fewer than 3 distinct scans (a ramp,
not one batch opened at once, such as a connection pool). Severity
``warning``; ``critical`` once the process's open fds reached 512, half the
usual soft limit (1024) at which ``open`` and ``socket`` start failing.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from .base import Evidence, Finding, culprit_line, stack_lines

KIND = "fd-leak"
MIN_LEAKED = 20
MIN_SHARE = 0.5
MIN_SCANS = 3
CRITICAL_FDS = 512
# A dump this close to the opens still shows the code that made them.
NEAR_NS = 1_000_000_000
# Closes this close to a process's last sample are its shutdown (see never_closed).
END_NS = 500_000_000
_ORDER = {"close": 0, "open": 1, "addr": 2}  # the scanner writes a reuse as close, open


def never_closed(fds: pd.DataFrame, ends: dict[int, int] | None = None) -> pd.DataFrame:
    """The fds opened while traced and not closed before their process's
    end: one row per open, with the address its socket got later (an
    ``addr`` event) filled in.

    ``ends``: each process's last sample; a close seen within END_NS of it
    is the process ending (the interpreter closing what it still held as it
    shut down, or the kernel at exit), not the program closing the fd."""
    if fds.empty:
        return fds
    f = fds.assign(
        event=fds["event"].astype(str),
        _o=fds["event"].astype(str).map(_ORDER).fillna(3),
    ).sort_values(["pid", "fd", "t_ns", "_o"], kind="stable")
    # each open starts a new life of its (pid, fd); a close or addr belongs to
    # the life it follows
    f["_life"] = (f["event"] == "open").astype(int).groupby([f["pid"], f["fd"]]).cumsum()
    key = ["pid", "fd", "_life"]
    opens = f[f["event"] == "open"]
    closes = f[f["event"] == "close"]
    if ends:
        end = closes["pid"].map(ends).fillna(np.iinfo(np.int64).max).to_numpy()
        closes = closes[closes["t_ns"].to_numpy() < end - END_NS]
    closed = closes.drop_duplicates(key)[key].assign(_closed=True)
    o = opens.merge(closed, on=key, how="left")
    o = o[o["_closed"].isna() & ~o["initial"].astype(bool)]
    addr = f[f["event"] == "addr"].drop_duplicates(key, keep="last")
    if len(addr) and len(o):
        a = addr[[*key, "proto", "local", "remote"]].rename(
            columns={"proto": "_p", "local": "_l", "remote": "_r"}
        )
        o = o.merge(a, on=key, how="left")
        for c, n in (("proto", "_p"), ("local", "_l"), ("remote", "_r")):
            mine = o[c].astype(object).where(o[c].astype(str) != "", None)
            o[c] = mine.fillna(o[n]).fillna("")
        o = o.drop(columns=["_p", "_l", "_r"])
    return o.drop(columns=["_o", "_life", "_closed"], errors="ignore")


def _what(r: Any) -> str:
    kind = str(r.kind)
    if kind == "socket":
        remote, local, proto = str(r.remote or ""), str(r.local or ""), str(r.proto or "")
        if remote:
            return remote
        return f"{proto} {local}".strip() or "socket (no address)"
    return str(r.target)


def resources(leaked: pd.DataFrame, top: int = 5) -> list[dict[str, Any]]:
    """The leaked fds grouped by path or peer (by folder when they are all
    different files), most first."""
    whats = [_what(r) for r in leaked.itertuples(index=False)]
    kind = str(leaked["kind"].iloc[0]) if len(leaked) else ""
    if kind == "file" and len(set(whats)) > top:
        whats = [str(PurePath(w).parent / "*") for w in whats]
    s = pd.Series(whats).value_counts()
    return [{"kind": kind, "what": str(w), "count": int(n)} for w, n in s.head(top).items()]


def find(ev: Evidence) -> list[Finding]:
    fds = ev.fds
    if fds.empty or "initial" not in fds.columns:
        return []
    p = ev.processes
    ends = p.groupby("pid")["t_ns"].max().astype("int64").to_dict() if len(p) else {}
    leaked = never_closed(fds, ends)
    if leaked.empty:
        return []
    opened = fds[(fds["event"].astype(str) == "open") & ~fds["initial"].astype(bool)]
    n_open = opened.groupby(["pid", "kind"], observed=True).size()
    out: list[Finding] = []
    for (pid, kind), g in leaked.groupby(["pid", "kind"], observed=True):
        pid, kind = int(pid), str(kind)
        n = len(g)
        total = int(n_open.get((pid, kind), n))
        scans = g["t_ns"].nunique()
        if n < MIN_LEAKED or n < MIN_SHARE * total or scans < MIN_SCANS:
            continue
        first, last = int(g["t_ns"].min()), int(g["t_ns"].max())
        counts = _counts(ev.processes, pid, kind)
        tid, frames = _opener(ev, pid, first, last)
        evidence: dict[str, float] = {
            "never_closed": n,
            "opened": total,
            "closed": total - n,
            "scans": scans,
            "per_s": n / max((last - first) / 1e9, ev.period / 1e9),
            **counts,
        }
        res = resources(g)
        top = f" ({res[0]['what']})" if res and res[0]["count"] * 2 >= n else ""
        peak = counts.get("fds_peak", 0)
        out.append(
            Finding(
                kind=KIND,
                severity="critical" if peak >= CRITICAL_FDS else "warning",
                title=(
                    f"fd leak in PID {pid}: {n} {kind} fds opened and held until the process ended{top}, "
                    f"{kind} count {counts.get('count_start', 0):.0f} -> peak "
                    f"{counts.get('count_peak', 0):.0f}"
                ),
                start_s=ev.rel(first),
                duration_s=(last - first) / 1e9,
                pid=pid,
                tid=tid,
                thread_name=ev.name(pid, tid),
                evidence=evidence,
                stack=stack_lines(frames),
                culprit=culprit_line(frames),
                resources=res,
            )
        )
    return out


def _counts(processes: pd.DataFrame, pid: int, kind: str) -> dict[str, float]:
    col = f"fds_{kind}"
    if processes.empty or col not in processes.columns:
        return {}
    p = processes[processes["pid"] == pid].sort_values("t_ns")
    if p.empty:
        return {}
    c = p[col].to_numpy()
    return {
        "count_start": int(c[0]),
        "count_end": int(c[-1]),
        "count_peak": int(c.max()),
        "fds_peak": int(p["fds"].max()) if "fds" in p.columns else int(c.max()),
    }


def _opener(ev: Evidence, pid: int, first: int, last: int) -> tuple[int | None, list]:
    """The thread that most likely opened them, and its code where a dump
    near the opens shows it: the thread of the process that used the most
    CPU while they were being opened (opening costs CPU; waiting does not)."""
    mine = ev.rows_near(pid, first - ev.period, last)
    if mine.empty:
        return None, []
    cpu = np.where(
        mine["cpu_ns"].to_numpy() > 0,
        mine["cpu_ns"].to_numpy(),
        mine["user_ns"].to_numpy() + mine["system_ns"].to_numpy(),
    )
    used = pd.Series(cpu, index=mine.index).groupby(mine["tid"]).agg(lambda x: x.max() - x.min())
    tid = int(used.idxmax())
    frames = ev.stack_of(pid, tid, [(first - ev.period, last)], nearest=False)
    if not frames:
        frames = ev.stack_of(pid, tid, [(first - NEAR_NS, last + NEAR_NS)], nearest=False)
    return tid, frames
