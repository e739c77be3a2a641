"""What died between samples: the summary's exact final figures (docs/format.md).

Sampling misses the threads and processes that live between two samples,
and the last stretch of those it saw.  Two sources close the gap:

* the ``exits`` table (root: the kernel's record of every exiting task):
  a thread it lists that sampling never saw gets a row of its own; one that
  sampling saw gets its final counters from it (never below the thread's
  own last reading: the kernel's counters only grow); a process born and
  dead between samples gets a row; a process's CPU is at least the sum of
  its threads' final CPU;
* the parents' ``children_user_ns``/``children_system_ns`` (cutime/cstime):
  the CPU the kernel credited to each process for the children it reaped.

And it says what is still unknown: ``threads_missed_at_most`` (docs/format.md).
Pure functions: a summary dict and frames in, the summary dict out.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from circuit.tracer.waits import WAIT_REASONS

COUNTERS = ("user_ns", "system_ns", "cpu_ns", "run_delay_ns", "ctx_vol", "ctx_invol")
_KEYS = {
    "cpu_user_s": "user_ns",
    "cpu_system_s": "system_ns",
    "ctx_voluntary": "ctx_vol",
    "ctx_involuntary": "ctx_invol",
    "run_delay_s": "run_delay_ns",
}


def _cpu_ns(r: Any) -> int:
    """A task's CPU: the scheduler's runtime, or its tick-sampled user+system."""
    return int(r.cpu_ns) if r.cpu_ns > 0 else int(r.user_ns + r.system_ns)


def final_exits(exits: pd.DataFrame | None) -> pd.DataFrame:
    """One record per (pid, tid), the latest (a tid reused within a run is rare)."""
    if exits is None or not len(exits):
        return pd.DataFrame(columns=["t_ns", "pid", "tid", "ppid", "name", *COUNTERS])
    return exits.sort_values("t_ns", kind="stable").drop_duplicates(["pid", "tid"], keep="last")


def _thread_row(r: Any) -> dict[str, Any]:
    return {
        "pid": int(r.pid),
        "tid": int(r.tid),
        "name": str(r.name),
        "python_name": None,
        "cpu_s": round(_cpu_ns(r) / 1e9, 6),
        "cpu_user_s": round(r.user_ns / 1e9, 6),
        "cpu_system_s": round(r.system_ns / 1e9, 6),
        "ctx_voluntary": int(r.ctx_vol),
        "ctx_involuntary": int(r.ctx_invol),
        "run_delay_s": round(max(int(r.run_delay_ns), 0) / 1e9, 6),
        "time_by_state": {},
        "time_by_wait": {w: 0.0 for w in WAIT_REASONS},
        "seen_only_at_exit": True,
    }


def _topped_up(t: dict[str, Any], last: Any, r: Any) -> None:
    """Add to a sampled thread's figures what it did after its last sample."""
    for key, col in _KEYS.items():
        more = max(int(getattr(r, col)) - int(getattr(last, col)), 0)
        if more:
            t[key] = round(t[key] + more / 1e9, 6) if key.endswith("_s") else t[key] + more
    more_cpu = max(_cpu_ns(r) - _cpu_ns(last), 0)
    if more_cpu:
        t["cpu_s"] = round(t["cpu_s"] + more_cpu / 1e9, 6)


def apply_thread_exits(summary: dict[str, Any], threads: pd.DataFrame, exits: pd.DataFrame) -> int:
    """Final figures for the sampled threads, rows for the others; returns
    how many threads were seen only at exit."""
    rows = summary["threads"]
    for t in rows:
        t.setdefault("seen_only_at_exit", False)
    if not len(exits):
        return 0
    by_key = {(int(r.pid), int(r.tid)): r for r in exits.itertuples(index=False)}
    lasts = {}
    if len(threads):
        last = threads.sort_values("t_ns", kind="stable").drop_duplicates(
            ["pid", "tid"], keep="last"
        )
        lasts = {(int(r.pid), int(r.tid)): r for r in last.itertuples(index=False)}
    seen = set()
    for t in rows:
        key = (t["pid"], t["tid"])
        seen.add(key)
        r = by_key.get(key)
        if r is not None and key in lasts:
            _topped_up(t, lasts[key], r)
    new = [_thread_row(r) for key, r in sorted(by_key.items()) if key not in seen]
    rows.extend(new)
    return len(new)


def apply_process_exits(summary: dict[str, Any], exits: pd.DataFrame) -> int:
    """A process's CPU is at least the sum of its threads' (their final
    figures included); a process known only from exit records gets a row.
    Returns how many such processes."""
    threads_cpu: dict[int, list[float]] = {}
    for t in summary["threads"]:
        acc = threads_cpu.setdefault(t["pid"], [0.0, 0.0, 0.0, 0])
        acc[0] += t["cpu_s"]
        acc[1] += t["cpu_user_s"]
        acc[2] += t["cpu_system_s"]
        acc[3] += 1
    known = {p["pid"]: p for p in summary["processes"]}
    info = (
        exits.sort_values("t_ns").groupby("pid")[["ppid", "name"]].last()
        if len(exits)
        else pd.DataFrame(columns=["ppid", "name"])
    )
    added = 0
    for pid, (total, user_ns, system_ns, n) in threads_cpu.items():
        p = known.get(pid)
        if p is None:
            if pid not in info.index:
                continue
            split = user_ns + system_ns
            user = total * user_ns / split if split > 0 else total
            summary["processes"].append(
                {
                    "pid": int(pid),
                    "ppid": int(info.at[pid, "ppid"]),
                    "cmdline": f"[{info.at[pid, 'name']}]",
                    "cpu_s": round(total, 6),
                    "cpu_user_s": round(user, 6),
                    "cpu_system_s": round(total - user, 6),
                    "rss_peak_bytes": 0,
                    "threads_peak": int(n),
                    "fds_peak": 0,
                    "fds_peak_by_kind": {},
                    "seen_only_at_exit": True,
                }
            )
            added += 1
        elif total > p["cpu_s"] + 1e-6:
            # (the user/system split stays the process counters')
            share = p["cpu_user_s"] / p["cpu_s"] if p["cpu_s"] > 0 else 1.0
            p["cpu_user_s"] = round(total * share, 6)
            p["cpu_system_s"] = round(total - p["cpu_user_s"], 6)
            p["cpu_s"] = round(total, 6)
    for p in summary["processes"]:
        p.setdefault("seen_only_at_exit", False)
    summary["processes"].sort(key=lambda p: p["pid"])
    return added


def children_cpu(
    processes: pd.DataFrame, exits: pd.DataFrame, source: str | None
) -> dict[int, tuple[float, str]]:
    """pid -> (CPU s of its children and their descendants, where from).

    With exit records: every descendant that exited while circuit listened
    ("exits").  Without: what the kernel credited the process for the
    children it reaped (cutime + cstime over the run, "reaped"), as its own
    ``os.times()`` reports it."""
    out: dict[int, tuple[float, str]] = {}
    if source == "taskstats" and len(exits):
        own = exits.assign(c=[_cpu_ns(r) for r in exits.itertuples(index=False)])
        per = own.groupby("pid")["c"].sum().to_dict()
        parent = own.groupby("pid")["ppid"].last().to_dict()
        for pid, c in per.items():
            seen: set[int] = set()
            up = parent.get(pid)
            while up is not None and up not in seen:  # credit every ancestor
                seen.add(up)
                total, _ = out.get(int(up), (0.0, "exits"))
                out[int(up)] = (total + c / 1e9, "exits")
                up = parent.get(up)
        return out
    if "children_user_ns" in processes.columns and len(processes):
        p = processes.sort_values("t_ns", kind="stable")
        both = p["children_user_ns"] + p["children_system_ns"]
        g = both.groupby(p["pid"])
        for pid, d in (g.last() - g.first()).items():
            out[int(pid)] = (float(d) / 1e9, "reaped")
        # (a process's first sample is its baseline: in a `run` its children
        # reaped before then number none, as its fork came just before)
    return out


def unseen_cpu(summary: dict[str, Any]) -> float:
    """CPU s the processes' own counters hold beyond their threads' rows.

    Each process's counter (/proc/PID/stat) includes its exited threads;
    what its thread rows do not account for ran in threads circuit never
    saw, or in the last stretch of those it saw (up to one sampling period
    each).  The counters tick at 10 ms and may lag 20 ms (docs/format.md),
    so a few hundredths of a second per process are noise.  Near 0 with
    exit records: every thread then has its final figures."""
    per_pid: dict[int, float] = {}
    for t in summary["threads"]:
        per_pid[t["pid"]] = per_pid.get(t["pid"], 0.0) + t["cpu_s"]
    total = 0.0
    for p in summary["processes"]:
        gap = max(p["cpu_s"] - per_pid.get(p["pid"], 0.0), 0.0)
        p["cpu_in_unseen_threads_s"] = round(gap, 6)
        total += gap
    return round(total, 6)


def missed(meta: dict[str, Any], threads: pd.DataFrame, exits: pd.DataFrame) -> int | None:
    """At most how many tasks (threads and processes) of the tree circuit
    never saw: the pids the machine handed out during the run, less those of
    the tree's tasks circuit saw start then.  Other processes on the machine
    take pids too, so this is an upper bound, exact on a quiet machine;
    None when the run lacks the pid counter."""
    ex = meta.get("exits") or {}
    first, n, pid_max = (
        ex.get("last_pid_start", -1),
        ex.get("pids_allocated", -1),
        ex.get("pid_max"),
    )
    if first is None or first < 0 or n is None or n < 0 or not pid_max:
        return None
    tids: set[int] = set()
    for df in (threads, exits):
        if len(df):
            tids.update(int(t) for t in pd.unique(df["tid"]))
    new = sum(1 for t in tids if 0 < (t - first) % pid_max <= n)
    return max(n - new, 0)


def apply_exits(
    summary: dict[str, Any],
    meta: dict[str, Any],
    threads: pd.DataFrame,
    processes: pd.DataFrame,
    exits: pd.DataFrame | None,
) -> None:
    """The summary's figures for what died between samples (in place)."""
    source = (meta.get("exits") or {}).get("source")
    ex = final_exits(exits)
    summary["threads_seen_only_at_exit"] = apply_thread_exits(summary, threads, ex)
    summary["processes_seen_only_at_exit"] = apply_process_exits(summary, ex)
    kids = children_cpu(processes, ex, source)
    for p in summary["processes"]:
        c = kids.get(p["pid"])
        p["children_cpu_s"] = round(c[0], 6) if c else 0.0
        p["children_cpu_source"] = c[1] if c else None
    summary["cpu_user_s"] = round(sum(p["cpu_user_s"] for p in summary["processes"]), 6)
    summary["cpu_system_s"] = round(sum(p["cpu_system_s"] for p in summary["processes"]), 6)
    cpu = summary["cpu_user_s"] + summary["cpu_system_s"]
    summary["cpu_s"] = round(cpu, 6)
    wall = summary.get("wall_s") or 0.0
    summary["parallelism"] = round(cpu / wall, 4) if wall else 0.0
    summary["cpu_in_unseen_threads_s"] = unseen_cpu(summary)
    summary["exits_source"] = source
    summary["exit_records_lost"] = (meta.get("exits") or {}).get("overflows")
    lost = summary["exit_records_lost"]
    # With every exit recorded (none lost), the tree's tasks were all seen:
    # alive at a sample, or in an exit record.
    complete = source == "taskstats" and not lost
    summary["threads_missed_at_most"] = 0 if complete else missed(meta, threads, ex)
