"""Runs side by side: the figures of several runs' summaries in one table.

Pure functions over the dicts :func:`circuit.analysis.summary.summarize`
returns (``circuit summary --json``), so every figure in a comparison is one
the run's own summary states, or a sum of them.  The first run is the
baseline: each other run's figure is given as a ratio to it (times,
counts, rates) or as a difference (shares, contention).

``findings`` and ``loops`` are read when a summary has them; a summary
without the key is "not recorded" (an older circuit), which is not the same
as an empty list (recorded, none found).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from circuit.tracer.schema import FD_KIND_COLUMNS
from circuit.tracer.waits import WAIT_REASONS

RATIO = "ratio"
DIFF = "difference"
NOT_RECORDED = "not recorded"
FD_KINDS = tuple(c[4:] for c in FD_KIND_COLUMNS)
SEVERITY_RANK = {"info": 1, "warning": 2, "critical": 3}
# meta.json fields that make two runs differ in what was run or where.
META_FIELDS = (
    "command",
    "python_version",
    "cpus",
    "rate_hz_requested",
    "host",
    "kernel",
    "machine",
    "backend",
    "mode",
    "circuit_version",
)
MACHINE_FIELDS = ("host", "kernel", "machine", "cpus")


@dataclass(frozen=True)
class Metric:
    key: str  # stable name: the row of the table, the key in --json
    group: str  # the table's section
    label: str  # words for a reader
    unit: str
    compared: str  # RATIO or DIFF


def _m(key: str, group: str, label: str, unit: str, compared: str = RATIO) -> Metric:
    return Metric(key, group, label, unit, compared)


BASE_METRICS: tuple[Metric, ...] = (
    _m("wall_s", "run", "wall time", "s"),
    _m("cpu_s", "run", "CPU time", "s"),
    _m("cpu_user_s", "run", "CPU user", "s"),
    _m("cpu_system_s", "run", "CPU system", "s"),
    _m("parallelism", "run", "parallelism", "CPU s per wall s"),
    _m("rss_peak_mib", "run", "peak RSS, largest process", "MiB"),
    _m("processes", "run", "processes", "count"),
    _m("threads", "run", "threads", "count"),
    _m("threads_peak", "run", "threads at once", "count"),
    _m("thread_s", "time", "thread time", "thread-s"),
    _m("ctx_per_s", "switches", "context switches", "per s"),
    _m("ctx_voluntary_per_s", "switches", "voluntary", "per s"),
    _m("ctx_involuntary_per_s", "switches", "involuntary", "per s"),
    _m("run_delay_s", "switches", "run-queue delay", "thread-s"),
    _m("gil_contention", "gil", "GIL contention", "share", DIFF),
    _m("gil_wait_s", "gil", "GIL wait", "thread-s"),
    _m("gil_switches_per_s", "gil", "GIL hand-offs", "per s"),
    _m("loops", "loops", "event loops", "count"),
    _m("loop_busy_share", "loops", "busiest loop's busy share", "share", DIFF),
    _m("loop_longest_stall_s", "loops", "longest loop stall", "s"),
    _m("loop_stalls", "loops", "loop stalls", "count"),
    _m("fds_peak", "fds", "open fds (peak)", "count"),
    *(_m(f"fds_{k}", "fds", f"  {k}", "count") for k in FD_KINDS),
)
# Whole rows for these groups are "not recorded" when the summary lacks the key.
OPTIONAL_GROUPS = {"loops": "loops"}


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _stalls(x: Any) -> float:
    """A loop's stalls: a count, or the list of them."""
    if isinstance(x, list):
        return float(len(x))
    return _num(x)


def figures(s: dict[str, Any]) -> dict[str, float]:
    """One run's figures, keyed as the metrics are: each a value of its
    summary or a sum over its threads or processes (NaN: not applicable or
    not recorded)."""
    th = s.get("threads") or []
    pr = s.get("processes") or []
    wall = _num(s.get("wall_s"))
    f: dict[str, float] = {k: _num(s.get(k)) for k in ("wall_s", "cpu_s", "cpu_user_s")}
    f["cpu_system_s"] = _num(s.get("cpu_system_s"))
    f["parallelism"] = _num(s.get("parallelism"))
    f["rss_peak_mib"] = max((p["rss_peak_bytes"] for p in pr), default=0) / 2**20
    f["processes"] = float(len(pr))
    f["threads"] = float(len(th))
    f["threads_peak"] = float(max((p["threads_peak"] for p in pr), default=0))
    waits = {w: sum(t["time_by_wait"].get(w, 0.0) for t in th) for w in WAIT_REASONS}
    total = sum(waits.values())
    f["thread_s"] = total
    states: dict[str, float] = {}
    for t in th:
        for k, v in t.get("time_by_state", {}).items():
            states[k] = states.get(k, 0.0) + v
    for k, v in sorted(states.items()):
        f[f"state_{k}_s"] = v
        f[f"state_{k}_share"] = v / total if total else math.nan
    for w, v in waits.items():
        f[f"wait_{w}_s"] = v
        f[f"wait_{w}_share"] = v / total if total else math.nan
    vol = sum(t["ctx_voluntary"] for t in th)
    inv = sum(t["ctx_involuntary"] for t in th)
    f["ctx_per_s"] = (vol + inv) / wall if wall else math.nan
    f["ctx_voluntary_per_s"] = vol / wall if wall else math.nan
    f["ctx_involuntary_per_s"] = inv / wall if wall else math.nan
    f["run_delay_s"] = sum(t["run_delay_s"] for t in th)
    gil = s.get("gil") or {}
    f["gil_contention"] = _num(gil.get("contention"))
    gp = gil.get("processes") or []
    f["gil_wait_s"] = sum(p["wait_s"] for p in gp) if gp else math.nan
    f["gil_switches_per_s"] = _num(gil.get("switches_per_s"))
    loops = s.get("loops")
    if isinstance(loops, list):
        f["loops"] = float(len(loops))
        busy = [_num(lp.get("busy_share")) for lp in loops]
        stall = [_num(lp.get("longest_stall_s")) for lp in loops]
        f["loop_busy_share"] = max((b for b in busy if not math.isnan(b)), default=math.nan)
        f["loop_longest_stall_s"] = max((x for x in stall if not math.isnan(x)), default=math.nan)
        f["loop_stalls"] = sum(_stalls(lp.get("stalls")) for lp in loops) if loops else math.nan
    else:
        for k in ("loops", "loop_busy_share", "loop_longest_stall_s", "loop_stalls"):
            f[k] = math.nan
    f["fds_peak"] = float(sum(p["fds_peak"] for p in pr))
    for k in FD_KINDS:
        f[f"fds_{k}"] = float(sum(p["fds_peak_by_kind"].get(k, 0) for p in pr))
    return f


def not_recorded(s: dict[str, Any]) -> set[str]:
    """The optional groups this summary has no key for."""
    return {g for g, key in OPTIONAL_GROUPS.items() if key not in s}


def metrics_for(figs: list[dict[str, float]]) -> list[Metric]:
    """The rows to show: the fixed ones, plus each state and wait reason that
    any run spent time in (a reason nobody waited in is no news)."""
    out = list(BASE_METRICS[:10])
    states = sorted({k[6:-2] for f in figs for k in f if k.startswith("state_") and k[-2:] == "_s"})
    for st in states:
        if any(f.get(f"state_{st}_s", 0.0) > 0 for f in figs):
            out.append(_m(f"state_{st}_s", "state", f"state {st}", "thread-s"))
            out.append(_m(f"state_{st}_share", "state", f"state {st}, share", "share", DIFF))
    for w in WAIT_REASONS:
        if any(f.get(f"wait_{w}_s", 0.0) > 0 for f in figs):
            out.append(_m(f"wait_{w}_s", "wait", w, "thread-s"))
            out.append(_m(f"wait_{w}_share", "wait", f"{w}, share", "share", DIFF))
    # fd kinds: the total always, a kind when some run had one open
    return out + [
        m
        for m in BASE_METRICS[10:]
        if not m.key.startswith("fds_") or any(f.get(m.key, 0.0) > 0 for f in figs)
    ]


def relative(a: float, b: float, compared: str) -> float:
    """``b`` against the baseline ``a``: b / a (0 / 0 = 1: no change) or b - a."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if compared == DIFF:
        return b - a
    if a == 0:
        return 1.0 if b == 0 else math.nan
    return b / a


def vs_column(label: str, base: str) -> str:
    return f"{label} vs {base}"


def table(figs: list[dict[str, float]], labels: list[str]) -> pd.DataFrame:
    """One row per metric: ``group, metric, label, unit, compared``, each
    run's value (a column per label) and, for each run after the first, its
    ratio or difference to the first (``"<label> vs <first>"``)."""
    rows = []
    for m in metrics_for(figs):
        vals = [f.get(m.key, math.nan) for f in figs]
        row: dict[str, Any] = {
            "group": m.group,
            "metric": m.key,
            "label": m.label,
            "unit": m.unit,
            "compared": m.compared,
        }
        row.update(zip(labels, vals, strict=True))
        for lab, v in zip(labels[1:], vals[1:], strict=True):
            row[vs_column(lab, labels[0])] = relative(vals[0], v, m.compared)
        rows.append(row)
    return pd.DataFrame(rows)


# -- findings ---------------------------------------------------------------


def _by_kind(findings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per finding kind: how many, the worst severity and that one's title."""
    out: dict[str, dict[str, Any]] = {}
    for f in findings:
        kind = str(f.get("kind", "?"))
        sev = str(f.get("severity", "info"))
        e = out.setdefault(kind, {"count": 0, "severity": sev, "title": f.get("title", "")})
        e["count"] += 1
        if SEVERITY_RANK.get(sev, 0) > SEVERITY_RANK.get(e["severity"], 0):
            e["severity"], e["title"] = sev, f.get("title", "")
    return out


def finding_status(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """What became of one finding kind from the baseline (a) to another run (b)."""
    if a is None and b is None:
        return "absent"
    if a is None:
        return "appeared"
    if b is None:
        return "disappeared"
    ra, rb = SEVERITY_RANK.get(a["severity"], 0), SEVERITY_RANK.get(b["severity"], 0)
    return "severity rose" if rb > ra else "severity fell" if rb < ra else "unchanged"


def findings_table(
    findings: list[list[dict[str, Any]] | None], labels: list[str]
) -> list[dict[str, Any]]:
    """One entry per finding kind seen in any run (matched by ``kind``: PIDs
    and TIDs differ between runs): per run its severity and count, or
    ``"not recorded"`` when that run's summary has no findings; per run after
    the first, its status against the first."""
    kinds = [_by_kind(f) if f is not None else None for f in findings]
    names = sorted({k for d in kinds if d for k in d})
    out = []
    for name in names:
        runs = {}
        for lab, d in zip(labels, kinds, strict=True):
            runs[lab] = NOT_RECORDED if d is None else d.get(name)
        entry: dict[str, Any] = {"kind": name, "runs": runs, "status": {}}
        base = kinds[0]
        for lab, d in zip(labels[1:], kinds[1:], strict=True):
            if base is None or d is None:
                entry["status"][lab] = NOT_RECORDED
            else:
                entry["status"][lab] = finding_status(base.get(name), d.get(name))
        titles = [r["title"] for r in runs.values() if isinstance(r, dict) and r.get("title")]
        entry["title"] = titles[0] if titles else name
        out.append(entry)
    return out


def changed_findings(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries whose status changed for some run."""
    return [
        e
        for e in entries
        if any(s not in ("unchanged", "absent", NOT_RECORDED) for s in e["status"].values())
    ]


# -- what differs between the runs themselves ---------------------------------------


def meta_differences(metas: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    """The meta.json fields whose values differ between the runs: command,
    Python version, CPU count, rate, machine...; each with every run's value."""
    out = []
    for k in META_FIELDS:
        vals = [m.get(k) for m in metas]
        if any(v != vals[0] for v in vals[1:]):
            out.append({"field": k, "values": dict(zip(labels, vals, strict=True))})
    return out


def different_machines(diffs: list[dict[str, Any]]) -> bool:
    return any(d["field"] in MACHINE_FIELDS for d in diffs)


def different_commands(diffs: list[dict[str, Any]]) -> bool:
    return any(d["field"] == "command" for d in diffs)


def median_figures(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over repeats (a bench cell), NaNs left out."""
    keys = dict.fromkeys(k for f in runs for k in f)
    out = {}
    for k in keys:
        v = pd.Series([f.get(k, math.nan) for f in runs], dtype=float).dropna()
        out[k] = float(v.median()) if len(v) else math.nan
    return out


# -- words for a table cell (the terminal table and the report share them) -------------


def value_text(x: float, unit: str, recorded: bool = True) -> str:
    """A figure as a cell: 'not recorded' (the run's summary has no such
    key), 'n/a' (no such thing in the run), else the number."""
    if not recorded:
        return NOT_RECORDED
    if math.isnan(x):
        return "n/a"
    if unit == "count":
        return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"
    if unit == "share":
        return f"{x:.3f}"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def vs_text(rel: float, base: float, value: float, compared: str) -> str:
    """The change against the baseline: x0.33, +0.120, 'new' (from zero)."""
    if math.isnan(rel):
        if not math.isnan(base) and base == 0 and not math.isnan(value):
            return "new"
        return ""
    if compared == DIFF:
        return f"{rel:+.3f}"
    return f"x{rel:.2f}"
