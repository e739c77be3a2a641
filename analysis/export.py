"""Export a run for other tools.

* Chrome Trace Event JSON (``perfetto`` and ``chrome`` write the same format;
  it opens in ui.perfetto.dev and chrome://tracing): one complete ('X')
  slice per merged thread-state interval, named by wait reason; process and
  thread names as metadata ('M') events (a thread's Python name where a
  py-spy dump gave one, with its tid: "worker-0 (tid 24371)"); marks as
  instant ('i') events; CPU (cores) and open fds by kind as counter ('C')
  events; for each process
  whose interpreter's GIL state was read (analysis/gil.py), a "GIL holder"
  track: one slice per stretch a thread held the GIL, named by its tid.
  Timestamps are microseconds since the run started.
* CSV: a zip of one CSV per table (threads, intervals, processes, fds,
  procs, gil, marks), for spreadsheets; threads and intervals have a
  ``python_name`` column beside the kernel's ``name``.

Both are written owner-only, like the run folder (analysis/files.py).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from circuit.tracer.schema import GIL_FIELDS
from circuit.tracer.waits import Classifier

from . import metrics as M
from .files import open_private, private_dirs
from .gil import holder_runs, holder_timeline
from .names import python_names, thread_label, with_python_names

# The GIL-holder track's thread id: above any Linux tid (pid_max is at most
# 2**22), so it never lands on a real thread's track.
GIL_TRACK_TID = 2**22 + 1


def _us(ns: np.ndarray | int, t0: int) -> Any:
    return (np.asarray(ns, dtype=np.int64) - t0) / 1000.0


def chrome_trace(run: Any) -> dict[str, Any]:
    """The run as a Trace Event Format dict ({"traceEvents": [...], ...})."""
    meta = run.meta
    th, pr, procs, marks = run.threads, run.processes, run.procs, run.marks
    per = M.run_period(meta)
    t0 = M.start_ns(meta, th, pr)
    events: list[dict[str, Any]] = []
    py = python_names(run)

    # -- metadata: names for pids and tids
    names: dict[int, str] = {}
    if len(procs):
        for r in procs.drop_duplicates("pid", keep="last").itertuples():
            names[int(r.pid)] = f"{r.name} ({r.pid}): {str(r.cmdline)[:120]}"
    pids = set(map(int, pr["pid"].unique())) | set(map(int, th["pid"].unique()))
    for pid in sorted(pids):
        events.append(
            {
                "ph": "M",
                "name": "process_name",
                "pid": pid,
                "tid": 0,
                "args": {"name": names.get(pid, f"pid {pid}")},
            }
        )
    if len(th):
        tn = th.groupby(["pid", "tid"], observed=True)["name"].last()
        for (pid, tid), name in tn.items():
            events.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": int(pid),
                    "tid": int(tid),
                    "args": {"name": thread_label(pid, tid, name, py.get((int(pid), int(tid))))},
                }
            )

    # -- thread states as complete slices (vectorised into columns, then rows)
    iv = M.state_intervals(th, per)
    if len(iv):
        cls = Classifier(meta.get("machine"))
        sc_codes = iv["syscall"].to_numpy()
        sc_names = {int(c): cls.syscall_name(int(c)) for c in np.unique(sc_codes)}
        frame = pd.DataFrame(
            {
                "name": iv["wait"],
                "cat": "state",
                "ph": "X",
                "ts": _us(iv["start_ns"].to_numpy(), t0),
                "dur": iv["dur_ns"].to_numpy() / 1000.0,
                "pid": iv["pid"].astype(int),
                "tid": iv["tid"].astype(int),
            }
        )
        state = iv["state"].to_numpy()
        syscalls = [sc_names[int(c)] for c in sc_codes]
        cpu_ms = np.round(iv["cpu_ns"].to_numpy() / 1e6, 3)
        records = frame.to_dict("records")
        for rec, st, sc, cm in zip(records, state, syscalls, cpu_ms, strict=True):
            rec["args"] = {"state": st, "syscall": sc, "cpu_ms": float(cm)}
        events += records

    # -- who held the GIL, where the interpreter said
    events += _gil_track(run, th, per, t0, py)

    # -- event loop stalls, on the loop's thread, around its states
    events += _loop_stalls(run, th, t0)

    # -- marks as instants on their thread
    if len(marks):
        fields = [c for c in marks.columns if c.startswith("field_")]
        for r in marks.to_dict("records"):
            args = {c[6:]: r[c] for c in fields if pd.notna(r[c])}
            events.append(
                {
                    "ph": "i",
                    "s": "t",
                    "name": _mark_title(r),
                    "cat": "mark",
                    "ts": float(_us(int(r["t_ns"]), t0)),
                    "pid": int(r["pid"]),
                    "tid": int(r["tid"]),
                    "args": {k: _jsonable(v) for k, v in args.items()},
                }
            )

    # -- counters: CPU per process, open fds by kind per process
    pc = M.process_cpu(pr, per, t0)
    for r in pc.itertuples():
        events.append(
            {
                "ph": "C",
                "name": "CPU (cores)",
                "pid": int(r.pid),
                "tid": 0,
                "ts": float(r.t_s * 1e6),
                "args": {"cpu": round(float(r.cpu), 4)},
            }
        )
    fc = M.fd_counts(pr, t0, by_pid=True)
    kinds = [k for k in M.FD_KINDS if k in fc.columns and fc[k].max() > 0]
    if len(fc) and kinds:
        # Only emit a counter when the counts change: long runs stay small.
        vals = fc[["pid", *kinds]].to_numpy()
        changed = np.ones(len(fc), dtype=bool)
        changed[1:] = (vals[1:] != vals[:-1]).any(axis=1)
        for r in fc[changed].itertuples(index=False):
            d = r._asdict()
            events.append(
                {
                    "ph": "C",
                    "name": "open fds",
                    "pid": int(d["pid"]),
                    "tid": 0,
                    "ts": float(d["t_s"] * 1e6),
                    "args": {k: int(d[k]) for k in kinds},
                }
            )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "tool": "circuit",
            "command": " ".join(meta.get("command") or []),
            "start_time": meta.get("start_time"),
            "rate_hz": meta.get("rate_hz_achieved"),
        },
    }


def _loop_stalls(run: Any, th: pd.DataFrame, t0: int) -> list[dict[str, Any]]:
    """One slice per event loop stall (analysis/loops.py) on the loop
    thread. Its ends are moved to the samples the stall lies between (its
    first busy sample, the next idle one) so that it encloses the thread's
    state slices inside it: a trace viewer nests them under it."""
    from .loops import loop_figures

    stacks = getattr(run, "stacks", None)
    out: list[dict[str, Any]] = []
    for lp in loop_figures(run.meta, th, stacks):
        mine = th[(th["pid"] == lp["pid"]) & (th["tid"] == lp["tid"])]
        t = np.sort(mine["t_ns"].to_numpy().astype(np.int64))
        for st in lp["stalls"]:
            a = M.start_ns(run.meta, th) + round(st["start_s"] * 1e9)
            b = a + round(st["duration_s"] * 1e9)
            i, j = np.searchsorted(t, [a, b])
            a2 = int(t[i]) if i < len(t) else a
            b2 = int(t[j]) if st["ended"] and j < len(t) else b
            out.append(
                {
                    "ph": "X",
                    "name": f"loop blocked: {st['culprit'] or st['state']}",
                    "cat": "loop",
                    "ts": float(_us(a2, t0)),
                    "dur": max(b2 - a2, 0) / 1000.0,
                    "pid": int(lp["pid"]),
                    "tid": int(lp["tid"]),
                    "args": {
                        "stall_s": st["duration_s"],
                        "state": st["state"],
                        "stack": "\n".join(st["stack"]),
                    },
                }
            )
    return out


def _gil_track(
    run: Any, th: pd.DataFrame, per: int, t0: int, py: dict[tuple[int, int], str]
) -> list[dict[str, Any]]:
    runs = holder_runs(holder_timeline(getattr(run, "gil", None), th, per))
    runs = runs[runs["holder"] >= 0]
    if runs.empty:
        return []
    names = th.groupby(["pid", "tid"], observed=True)["name"].last().astype(str).to_dict()
    events: list[dict[str, Any]] = []
    for pid in sorted(runs["pid"].unique()):
        events.append(
            {
                "ph": "M",
                "name": "thread_name",
                "pid": int(pid),
                "tid": GIL_TRACK_TID,
                "args": {"name": "GIL holder"},
            }
        )
    frame = pd.DataFrame(
        {
            "name": [
                "GIL: " + thread_label(p, h, names.get((p, h), "thread"), py.get((int(p), int(h))))
                if h > 0
                else "GIL: unnamed thread"
                for p, h in zip(runs["pid"], runs["holder"], strict=True)
            ],
            "cat": "gil",
            "ph": "X",
            "ts": _us(runs["start_ns"].to_numpy(), t0),
            "dur": (runs["end_ns"] - runs["start_ns"]).to_numpy() / 1000.0,
            "pid": runs["pid"].astype(int).to_numpy(),
            "tid": GIL_TRACK_TID,
        }
    )
    records = frame.to_dict("records")
    for rec, h in zip(records, runs["holder"].to_numpy(), strict=True):
        rec["args"] = {"holder_tid": int(h)}
    return events + records


def _mark_title(r: dict[str, Any]) -> str:
    """``phase: load`` for ``circuit.mark("phase", name="load")``, else the mark's name."""
    sub = r.get("field_name")
    return f"{r['name']}: {sub}" if sub is not None and pd.notna(sub) else str(r["name"])


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def write_chrome_trace(run: Any, out: str | Path) -> Path:
    out = Path(out)
    private_dirs(out.parent)
    with open_private(out) as f:
        json.dump(chrome_trace(run), f, separators=(",", ":"))
    return out


def csv_tables(run: Any) -> dict[str, pd.DataFrame]:
    per = M.run_period(run.meta)
    gil = getattr(run, "gil", None)
    py = python_names(run)
    return {
        "threads": with_python_names(run.threads, py),
        "intervals": with_python_names(M.state_intervals(run.threads, per), py),
        "processes": run.processes,
        "fds": run.fds,
        "procs": run.procs,
        "gil": gil if gil is not None else pd.DataFrame(columns=[c for c, _ in GIL_FIELDS]),
        "marks": run.marks,
    }


def write_csv_zip(run: Any, out: str | Path) -> Path:
    out = Path(out)
    private_dirs(out.parent)
    with open_private(out, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        for name, df in csv_tables(run).items():
            buf = io.StringIO()
            df.to_csv(buf, index=False)
            z.writestr(f"{name}.csv", buf.getvalue())
    return out
